"""FairSession: an onnxruntime session that keeps fairness counters as it serves.

    with FairSession("bundle/", store="counters.db") as fs:
        outputs = fs.run({"age": ..., "sex": ...}, sensitive={"race": [...]}, ids=[...])
        fs.record_outcomes(ids, labels)          # when the labels arrive
        table = fs.table()

Sensitive attributes never reach the model. Inputs and sensitive values are validated
before the model runs, so a failed call leaves the counters unchanged. Imports only
numpy, onnxruntime and the standard library.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefair.core.cells import DEFAULT_BINS
from edgefair.errors import EdgefairError, InputError, ModelError
from edgefair.modelio.outputs import OutputChoice, choose_output, decisions_list
from edgefair.modelio.outputs import decisions as decisions_array
from edgefair.modelio.session import Signature, TensorSpec, open_session, signature
from edgefair.runtime.counters import MAX_VALUES_PER_ATTRIBUTE, OTHER, UNKNOWN, Counters, OutcomeStats

if TYPE_CHECKING:  # bundles, the model-safety check, stores and tables load when a session uses them
    from edgefair.core.tables import CountsTable
    from edgefair.runtime.bundle import Bundle
    from edgefair.runtime.store import CounterStore

FLOAT32_ONE_BITS = int(np.array(1.0, np.float32).view(np.uint32))
_largest = np.maximum.reduce  # the ufunc itself: ndarray.max adds a Python frame per call
_FLOAT32 = np.dtype(np.float32)

SAFE_CASTS = {
    ("f", "f"),
    ("i", "f"),
    ("u", "f"),
    ("i", "i"),
    ("u", "i"),
    ("b", "b"),
    ("U", "O"),
    ("O", "O"),
    ("S", "O"),
}


@dataclass(frozen=True)
class SessionDescription:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sensitive: dict[str, list[str]]  # attribute -> every value it can be counted under (bounded)
    score_output: str
    threshold: float
    certificate_verdict: str | None  # None: no certificate

    @property
    def attributes(self) -> list[str]:
        return list(self.sensitive)


class FairSession:
    def __init__(
        self,
        model: str | Path,
        sensitive: Sequence[str] | None = None,
        store: str | Path | None = None,
        threads: int = 1,
        *,
        threshold: float | None = None,
        score_output: str | None = None,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        max_pending: int = 100_000,
        ttl_seconds: float = 7 * 86400,
        allow_failed_certificate: bool = False,
        trust_key: str | Path | None = None,
    ) -> None:
        path = Path(model)
        self.bundle: Bundle | None = None
        if path.is_dir() or path.suffix == ".zip":
            from edgefair.runtime.bundle import load_bundle  # hashlib, json, signatures: bundles only

            self.bundle = load_bundle(path, trust_key=trust_key)
            self.bundle.require_certified(allow_failed_certificate)
            data = self.bundle.model
            known = self.bundle.sensitive
            if sensitive is not None and list(sensitive) != list(known):
                raise InputError(f"sensitive {list(sensitive)} does not match the bundle's {list(known)}")
            threshold = self.bundle.manifest["threshold"] if threshold is None else threshold
            score_output = score_output or self.bundle.manifest["score_output"]
        else:
            if trust_key is not None:
                raise InputError(f"{path}: a trusted key verifies signed bundles; this is a bare model file")
            if not path.exists():
                raise ModelError(f"{path}: no such model or bundle")
            from edgefair.modelio.safety import check_model_bytes

            data = path.read_bytes()
            check_model_bytes(data, str(path))
            if not sensitive:
                raise InputError("name the sensitive attributes (sensitive=[...]) or load a bundle")
            known = {s: [] for s in sensitive}
        self.session = open_session(data, threads)
        self.signature = signature(self.session)
        self._inputs = {t.name: t for t in self.signature.inputs}
        self._input_count = len(self._inputs)
        # per input: (dtype, rank) worked out once, so a well-formed call does no lookups
        self._plan = {t.name: (np.dtype(t.numpy_dtype), len(t.shape)) for t in self.signature.inputs}
        # inputs are validated here, so onnxruntime's own per-call validation can be skipped
        self._run = getattr(self.session, "_sess", self.session).run
        self._output_names = [o.name for o in self.signature.outputs]
        self.choice = choose_output(self.signature, score_output)
        self._choice_index = self._output_names.index(self.choice.name)
        # one row's score: its flat index in the output (the careful path reads the same element)
        self._one_row = None if self.choice.kind == "label" else self.choice.column or 0
        _refuse_multiclass(self.signature, self.choice, str(path))
        self.threshold = 0.5 if threshold is None else float(threshold)
        self.store: CounterStore | None = None
        stored = None
        if store is not None:
            from edgefair.runtime.store import CounterStore  # sqlite3 only when a store is used

            if path.is_dir() and Path(store).resolve().is_relative_to(path.resolve()):
                raise InputError(  # a store inside the hash-checked folder would break the bundle for every later load
                    f"store {store}: inside the bundle folder {path}; keep counters outside the bundle"
                )

            self.store = CounterStore(store, tuple(known), DEFAULT_BINS)
            stored = self.store.flushed  # the snapshot its deltas are taken from
        # room for every value the store already holds (other writers may have learned
        # values this one has not), so resuming never folds counted groups into 'other'
        groups = stored.groups if stored is not None else ()
        learned = max((len({k[i] for k in groups} - {OTHER, UNKNOWN}) for i in range(len(known))), default=0)
        capacity = max(MAX_VALUES_PER_ATTRIBUTE, learned)  # the cap holds; values others learned keep their groups
        self.counters = Counters(list(known), known, DEFAULT_BINS, max_pending, ttl_seconds, capacity)
        if stored is not None:
            self.counters.add(stored)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._since_flush = 0
        self._flush_lock = threading.Lock()
        self._closed = threading.Event()
        self._shut = False  # the flag run() reads (an attribute, not a call on the hot path)
        self._timer: threading.Thread | None = None
        if self.store is not None and flush_seconds > 0:
            self._timer = threading.Thread(target=self._flush_loop, name="edgefair-flush", daemon=True)
            self._timer.start()

    # -- inference -------------------------------------------------------------------
    def _feeds(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        if not isinstance(inputs, Mapping):
            raise InputError(f"inputs must map each model input to its values (a dict), got {type(inputs).__name__}")
        if set(inputs) != set(self._inputs):
            missing = sorted(set(self._inputs) - set(inputs))
            extra = sorted(set(inputs) - set(self._inputs))
            what = f"missing {missing}" if missing else f"unexpected {extra}"
            raise InputError(f"model inputs {what}; expected {sorted(self._inputs)}")
        feeds = {}
        rows = -1
        plan = self._plan
        for name, value in inputs.items():
            want, rank = plan[name]
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            if arr.dtype is want and arr.ndim == rank:  # the common, well-formed case
                if rows not in (-1, arr.shape[0]):
                    raise InputError(f"input {name!r} has {arr.shape[0]} rows, others have {rows}")
                rows = arr.shape[0]
                feeds[name] = arr
                continue
            spec = self._inputs[name]
            if arr.dtype != want:
                if (arr.dtype.kind, want.kind) not in SAFE_CASTS:
                    raise InputError(f"input {name!r} has dtype {arr.dtype}, expected {spec.type}")
                arr = arr.astype(want)
            if arr.ndim != len(spec.shape):
                if arr.ndim == 1 and len(spec.shape) == 2 and spec.width == 1:
                    arr = arr.reshape(-1, 1)
                else:
                    raise InputError(f"input {name!r} has shape {list(arr.shape)}, expected {list(spec.shape)}")
            if rows not in (-1, arr.shape[0]):
                raise InputError(f"input {name!r} has {arr.shape[0]} rows, others have {rows}")
            rows = arr.shape[0]
            feeds[name] = arr
        return feeds, rows

    def _infer(self, inputs: Mapping[str, Any]) -> tuple[list[Any], int]:
        """Model outputs and row count. Well-formed numpy inputs go straight to onnxruntime,
        which checks names, types and ranks itself; anything it refuses goes through
        ``_feeds``, which converts safe casts or names the problem."""
        try:  # as many inputs as the model's: onnxruntime refuses a name it does not know
            rows = set(map(len, inputs.values()))  # len of an array: its first dimension
            if len(rows) == 1 and len(inputs) == self._input_count:
                return self._run(self._output_names, inputs, None), rows.pop()
        except Exception:  # lists, wrong dtypes or ranks: the careful path below
            pass
        feeds, n = self._feeds(inputs)
        try:
            return self._run(self._output_names, feeds, None), n
        except Exception as exc:
            raise ModelError(f"onnxruntime failed: {str(exc).strip().splitlines()[0][:300]}") from None

    def run(
        self,
        inputs: Mapping[str, Any],
        sensitive: Mapping[str, Any],
        ids: Sequence[Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs``; count its decisions by the rows' sensitive groups."""
        if self._shut:  # a closed session's counts would never reach its store
            raise InputError("this FairSession is closed; open a new one to run the model")
        counters = self.counters
        # seen values are coded before the model runs, while the caller's strings are in cache;
        # not for label outputs or id batches, which only the careful path counts
        fast = self._one_row is not None and (ids is None or len(ids) == 1)
        known = counters.known_codes(sensitive) if fast else None
        values, rows = self._infer(inputs)
        outputs = dict(zip(self._output_names, values, strict=True))
        if known is None or known[1] != rows or not self._fast(values, rows, known[0], ids):
            self._count(outputs, sensitive, ids, rows)
        if self.store is not None:
            self._since_flush += rows
            if self._since_flush >= self.flush_rows:
                self.flush()
        return outputs

    def _count(
        self, outputs: dict[str, Any], sensitive: Mapping[str, Any], ids: Sequence[Any] | None, rows: int
    ) -> None:
        """The careful path: validates everything, learns new values, clips or refuses scores."""
        counters = self.counters
        if isinstance(ids, (str, bytes)):  # its letters would become ids
            raise InputError(f"ids must be a list with one id per row, got a {type(ids).__name__}")
        if rows == 0:  # nothing to count; the names and lengths still have to fit
            counters.group_code_list(sensitive, 0)
            if ids is not None and len(ids):
                raise InputError(f"{len(ids)} ids for 0 rows")
            return
        if rows == 1:  # one row: Python scalars throughout
            group = counters.group_code(sensitive)
            if ids is not None and len(ids) != 1:
                raise InputError(f"{len(ids)} ids for 1 rows")
            scores, decisions = decisions_list(outputs[self.choice.name], self.choice, self.threshold)
            counters.update_one(group, decisions[0], None if scores is None else scores[0], ids)
            return
        small = rows <= 16  # a few rows: plain Python lists, no numpy call overhead
        groups: Any = counters.group_code_list(sensitive, rows) if small else counters.group_codes(sensitive, rows)
        if ids is not None and len(ids) != rows:
            raise InputError(f"{len(ids)} ids for {rows} rows")
        decide = decisions_list if small else decisions_array
        scores, decisions = decide(outputs[self.choice.name], self.choice, self.threshold)
        counters.update(groups, decisions, scores, ids)

    def _fast(self, values: list[Any], rows: int, codes: Any, ids: Sequence[Any] | None) -> bool:
        """Count rows whose values were seen before and whose scores are plain probabilities:
        deferred (``Counters.defer``), or at once when one row carries its id. False sends the
        call down the careful path (odd shapes, scores to clip or refuse, ids that do not fit).
        Label outputs and batches of several ids never get here (``run`` codes no values for them)."""
        value = values[self._choice_index]
        if rows == 1:  # the serving hot path, fewest steps; the careful path reads the same element
            score = value.item(self._one_row)
            if not 0.0 <= score <= 1.0:  # NaN too: decisions_list clips or refuses it
                return False
            if ids is None:
                self.counters.defer_one(codes, score, self.threshold)
            else:
                self.counters.update_one(codes, 1 if score >= self.threshold else 0, score, ids)
            return True
        column = self.choice.column
        if ids is not None:  # one id for a batch: the careful path names the mismatch
            return False
        if not isinstance(value, np.ndarray) or value.ndim not in (1, 2) or value.shape[0] != rows or not rows:
            return False  # odd outputs, or no rows at all: the careful path
        if value.ndim != 2 if column is not None else value.size != rows:  # a column, or one score per row
            return False
        if value.dtype is _FLOAT32:  # one reduction: as uint32, floats in [0, 1] are the bit patterns up to 1.0's
            if _largest(value.view(np.uint32), None) > FLOAT32_ONE_BITS:  # negative, NaN or above 1: the careful path
                return False
        elif not (value.min() >= 0.0 and value.max() <= 1.0):
            return False
        # the whole output is copied (the caller may change it) and validated: a score column of a
        # wider output whose other columns are not probabilities takes the careful path
        kept = value.copy()
        self.counters.defer(codes, kept[:, column] if column is not None else kept, self.threshold)
        return True

    def record_outcomes(self, ids: Sequence[Any], labels: Sequence[Any]) -> OutcomeStats:
        """Join labels that arrived later to their predictions, by id."""
        if self._shut:
            raise InputError("this FairSession is closed; its outcomes would never reach its store")
        return self.counters.record_outcomes(ids, labels)

    def table(self) -> CountsTable:
        return self.counters.table()

    def describe(self) -> SessionDescription:
        """What a server shows about this session: tensors, attributes, decision rule."""
        manifest = self.bundle.manifest if self.bundle else {}
        certificate = manifest.get("certificate") or {}
        return SessionDescription(
            inputs=self.signature.inputs,
            outputs=self.signature.outputs,
            sensitive=self.counters.known_values(),
            score_output=self.choice.name,
            threshold=self.threshold,
            certificate_verdict=certificate.get("verdict"),
        )

    # -- persistence -----------------------------------------------------------------
    def flush(self) -> None:
        if self.store is None:
            return
        with self._flush_lock:
            self.store.flush(self.counters.table())
            self._since_flush = 0

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            # a failing disk must not kill inference; the next flush retries
            with contextlib.suppress(EdgefairError):
                self.flush()

    def drift(self) -> dict[str, Any]:
        """Field counters against the bundle certificate's baseline."""
        from edgefair.runtime.drift import drift

        baseline = self.bundle.baseline() if self.bundle else None
        if baseline is None:
            raise InputError("no baseline: load a bundle built with a certificate (edgefair bundle --certificate)")
        return drift(self.table(), baseline)

    def close(self) -> None:
        if self._shut:
            return
        self._shut = True
        self._closed.set()  # wakes the flush thread
        if self._timer is not None:
            self._timer.join(timeout=5)
        if self.store is not None:
            self.flush()
            self.store.close()

    def __enter__(self) -> FairSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _refuse_multiclass(sig: Signature, choice: OutputChoice, where: str) -> None:
    """A K-class model (float scores of width > 2) is refused here, not at its first call: the
    runtime counts binary decisions, and its label output would count class 2 as an error later."""
    wide = [o for o in sig.outputs if o.type.startswith("tensor(float") and (o.width or 0) > 2]
    if wide and choice.kind == "label":
        o = wide[0]
        raise ModelError(
            f"{where}: a {o.width}-class model (output {o.name!r} {list(o.shape)}); the runtime counts binary "
            "classifiers only (a score in [0, 1] or a 0/1 label)"
        )
