"""Evaluate models beyond binary classification, in one pass like ``evaluate``.

- multi-class: a K-class paired table per candidate (``core.multiclass.ClassTable``);
  decisions are the argmax of the class probabilities or the model's class output, and
  labels must be the class indices 0..K-1 of the probability columns. With a positive
  class (``--positive-label k``) the binary one-vs-rest tables are kept as well, so the
  binary gate applies unchanged.
- regression: a moments table per candidate (``core.regression.MomentsTable``); with a
  decision threshold the predictions become decisions (prediction >= threshold) and the
  tables are binary counts tables (labels: 0/1 as given, else label >= threshold).

``evaluate_any`` is what verify and compare call: binary models take ``evaluate``'s path,
byte for byte.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair import data, modelio
from edgefair.core import multiclass, regression, tables
from edgefair.errors import InputError, ModelError, PolicyError
from edgefair.modelio import task_outputs as outputs
from edgefair.modelio.task_outputs import TASKS, TaskOutput
from edgefair.verification import evaluate as ev
from edgefair.verification import tasks
from edgefair.verification.policy import Policy


@dataclass(frozen=True)
class TaskInfo:
    """What a report says about the task: which output, how decisions were read."""

    task: str
    output: str
    decisions: str
    classes: int | None = None
    positive_class: int | None = None
    labels: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.task,
            "output": self.output,
            "decisions": self.decisions,
            "classes": self.classes,
            "positive_class": self.positive_class,
            "labels": self.labels,
        }


def resolve_task(sig: modelio.Signature, options: ev.EvaluateOptions) -> str:
    if options.task is None:
        if options.decision_threshold is not None:
            return "regression"
        return outputs.detect_task(sig, options.score_output)
    if options.task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {options.task!r}")
    if options.decision_threshold is not None and options.task != "regression":
        raise InputError("a decision threshold on predictions applies to --task regression only")
    return options.task


def task_of(reference: str | Path, options: ev.EvaluateOptions) -> str:
    """The task verify will run for ``reference`` under ``options`` (opens the model)."""
    p = Path(reference)
    if not p.exists():
        raise InputError(f"{p}: no such model file")
    try:
        sig = modelio.signature(modelio.open_session(p.read_bytes()))
    except ModelError as exc:
        raise ModelError(f"{p}: {exc}") from None
    return resolve_task(sig, options)


def prepare(
    reference: str | Path,
    options: ev.EvaluateOptions,
    policy: Policy,
    *,
    threshold: float | None,
    task: str | None,
    weight: str | None = None,
) -> ev.EvaluateOptions:
    """Options for the model's task, and the policy checked against it, before any data
    is read: a check with no meaning for the task is refused in one line."""
    if task is not None and task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    opts = dataclasses.replace(options, task=task, weight=weight)
    if task == "regression" and threshold is not None:
        if not math.isfinite(threshold):
            raise InputError(f"threshold must be a finite number, got {threshold}")
        opts = dataclasses.replace(opts, decision_threshold=threshold, threshold=0.5)
    resolved = task_of(reference, opts)
    if resolved == "multiclass" and threshold is not None:
        raise InputError("--threshold does not apply to a multi-class model: its decisions are the argmax")
    thresholded = opts.decision_threshold is not None
    if resolved == "regression" and not thresholded and tasks.regression_policy_needed(policy):
        raise PolicyError(
            "a regression model needs a policy (--policy) with checks in the label's units, e.g. "
            '[[checks]] kind = "overall_increase", metric = "mean_absolute_error", tolerance = 0.5'
        )
    if weight is not None and (resolved != "binary" or thresholded):
        raise InputError(f"--weight applies to binary classifiers in verify and compare; this model is {resolved}")
    as_gated = "binary" if thresholded else resolved
    tasks.check_policy(policy, as_gated, 0 if options.positive_label is not None else None)
    return opts


def evaluate_any(
    reference: str | Path,
    candidates: Sequence[str | Path],
    source: data.Source,
    options: ev.EvaluateOptions,
    progress: ev.Progress | None = None,
) -> ev.Evaluation:
    """``evaluate`` for a binary classifier, else the task's own pass."""
    if not candidates:
        raise InputError("give at least one candidate model")
    plain = options.task in (None, "binary") and options.decision_threshold is None
    if plain and task_of(reference, options) == "binary":
        if options.weight is not None:
            from edgefair.verification.weighted_evaluate import evaluate_weighted

            return evaluate_weighted(reference, candidates, source, options, progress)
        return ev.evaluate(reference, candidates, source, options, progress)
    return evaluate_task(reference, candidates, source, options, progress)


class _TaskModel:
    def __init__(self, path: str | Path, task: str, options: ev.EvaluateOptions):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such model file")
        raw = p.read_bytes()
        self.info = ev.ModelInfo.of(p, raw)
        try:
            self.session = modelio.open_session(raw)
            self.sig = modelio.signature(self.session)
            self.out = outputs.choose_task_output(self.sig, task, options.score_output)
        except ModelError as exc:
            raise ModelError(f"{p}: {exc}") from None
        self.batch = getattr(options, "batch_size", None)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(feeds.values()))) if feeds else 0
        if self.batch is None or self.batch >= rows:
            return np.asarray(self.session.run([self.out.name], feeds)[0])
        calls = range(0, rows, self.batch)  # one call per batch of rows, as deployed
        return np.concatenate(
            [self.session.run([self.out.name], {k: v[i : i + self.batch] for k, v in feeds.items()})[0] for i in calls]
        )

    def predict(self, feeds: dict[str, np.ndarray], chunk: data.Chunk) -> np.ndarray:
        out = self._run(feeds)
        try:
            if self.out.task == "multiclass":
                return outputs.class_decisions(out, self.out)
            return outputs.regression_values(out, self.out)
        except ModelError as exc:
            ev._blame_missing(out if out.ndim > 1 else out.reshape(-1, 1), feeds, chunk, self.info.path)
            raise ModelError(f"{self.info.path}: {exc}") from None


def class_labels(values: np.ndarray, name: str, chunk: data.Chunk, out: TaskOutput) -> np.ndarray:
    """Labels as class indices 0..K-1; a class the model never outputs names line and value."""
    numbers = data.numeric(values, name, chunk.source, chunk.first_line, allow_missing=False)
    assert out.classes is not None
    bad = ~np.isin(numbers, np.arange(out.classes))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{chunk.source}, line {chunk.first_line + i}, column {name!r}: class {np.asarray(values)[i]!r} is "
            f"not one the model outputs (classes 0..{out.classes - 1}, the columns of {out.probabilities!r})"
        )
    return numbers.astype(np.int64)


def positive_class(options: ev.EvaluateOptions, classes: int) -> int | None:
    value = options.positive_label
    if value is None:
        return None
    text = str(value).strip()
    if not (text.isdigit() and int(text) < classes):
        raise InputError(f"--positive-label {value!r} is not among the model's classes 0..{classes - 1}")
    return int(text)


def _threshold_labels(y: np.ndarray, threshold: float) -> tuple[np.ndarray, str]:
    if np.isin(y, (0.0, 1.0)).all():
        return y.astype(np.int64), "0/1 as given"
    return (y >= threshold).astype(np.int64), f"label >= {threshold:g}"


def _info(task: str, out: TaskOutput, options: ev.EvaluateOptions, positive: int | None) -> TaskInfo:
    if task == "multiclass":
        labels = "class indices 0..K-1 (the probability columns)"
        return TaskInfo(task, out.name, out.describe(), out.classes, positive, labels)
    if options.decision_threshold is not None:
        rule = f"{out.name!r} >= {options.decision_threshold:g}"
        return TaskInfo(task, out.name, rule, labels="0/1 as given, else label >= threshold")
    return TaskInfo(task, out.name, out.describe(), labels="numbers (error = prediction - label)")


def evaluate_task(
    reference: str | Path,
    candidates: Sequence[str | Path],
    source: data.Source,
    options: ev.EvaluateOptions,
    progress: ev.Progress | None = None,
) -> ev.Evaluation:
    """Paired tables of each candidate against the reference for a multi-class or
    regression model, in one pass over the data."""
    if not options.sensitive:
        raise InputError("name at least one sensitive column (--sensitive)")
    task = task_of(reference, options)
    ref = _TaskModel(reference, task, options)
    cands = [_TaskModel(c, task, options) for c in candidates]
    for c in cands:
        ev._same_inputs(ref, c)  # type: ignore[arg-type]  # reads .sig and .info only
        if c.out.classes != ref.out.classes:
            raise InputError(f"{c.info.path}: {c.out.classes} classes, the reference has {ref.out.classes}")
    positive = positive_class(options, ref.out.classes) if task == "multiclass" and ref.out.classes else None
    parts: list[list[Any]] = [[] for _ in cands]
    rows, sample = 0, dict[str, np.ndarray]()
    read_rows = getattr(options, "read_rows", options.chunk_rows)
    for chunk in source.chunks(ev.needed_columns(ref.sig, options), read_rows):
        if chunk.rows == 0:
            continue
        cols = chunk.columns
        exclude = [options.label, *options.sensitive]
        for name in exclude:
            data.require_column(cols, name, chunk.source)
        sens = ev.sensitive_of(cols, options, chunk)
        feeds = modelio.build_feeds(
            ref.sig, cols, feature_columns=options.feature_columns, exclude=exclude, source=chunk.source
        )
        if task == "multiclass":
            y = class_labels(cols[options.label], options.label, chunk, ref.out)
        else:
            y = data.numeric(cols[options.label], options.label, chunk.source, chunk.first_line, allow_missing=False)
        ref_pred = ref.predict(feeds, chunk)
        for i, cand in enumerate(cands):
            parts[i].append(_table(task, sens, ref_pred, cand.predict(feeds, chunk), y, ref.out, options))
        if not sample:
            sample = {k: v[:256].copy() for k, v in feeds.items()}
        rows += chunk.rows
        if progress:
            progress(chunk.rows)
    if rows == 0:
        raise InputError(f"{source.name}: no data rows")
    merged = [_merge(p) for p in parts]
    binary: tuple[tables.CountsTable, ...] = ()
    if task == "multiclass" and positive is not None:
        binary = tuple(multiclass.one_vs_rest(t, positive) for t in merged)
    elif task == "regression" and options.decision_threshold is not None:
        binary, merged = tuple(merged), []
    threshold = options.decision_threshold if options.decision_threshold is not None else options.threshold
    return ev.Evaluation(
        ref.info,
        tuple(c.info for c in cands),
        binary,
        source.name,
        source.sha256(),
        rows,
        options.label,
        tuple(options.sensitive),
        threshold,
        ref.out.name,
        sample,
        task=task,
        task_tables=tuple(merged),
        task_info=_info(task, ref.out, options, positive),
        batch_size=options.batch_size,
    )


def _table(
    task: str,
    sens: dict[str, np.ndarray],
    ref: np.ndarray,
    cand: np.ndarray,
    y: np.ndarray,
    out: TaskOutput,
    options: ev.EvaluateOptions,
) -> Any:
    if task == "multiclass":
        assert out.classes is not None
        return multiclass.from_arrays(sens, ref, cand, y, classes=out.classes)
    t = options.decision_threshold
    if t is None:
        return regression.from_arrays(sens, ref, cand, y)
    labels, _ = _threshold_labels(y, t)
    return tables.from_arrays(sens, (ref >= t).astype(np.int64), (cand >= t).astype(np.int64), labels)


def _merge(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, multiclass.ClassTable):
        return multiclass.merge(parts)
    if isinstance(first, regression.MomentsTable):
        return regression.merge(parts)
    return tables.merge(parts)
