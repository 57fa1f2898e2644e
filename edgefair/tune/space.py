"""The search space: one frozen spec per compressed variant, the stages that list them, and
how a spec becomes a checked model.

A spec names every knob (quantisation mode and its options, pruning, onnxruntime's offline
graph optimisation); its ``key`` identifies a build in the cache. Stages:

- ``base``: dynamic int8 (per-tensor/per-channel x reduce_range), static int8 (QDQ with u8
  activations, s8 weights and MinMax on random rows, then one knob changed at a time:
  QOperator, s8 activations, u8 weights, Entropy, Percentile, group-balanced rows,
  per-channel, output layer quantised too), fp16, offline graph optimisation, structured
  pruning in steps of 0.1 and magnitude pruning;
- ``refine``: structured levels bisected between the largest passing level and the next
  failing one (``REFINE_STEPS`` times: 20% passing and 30% failing gives 25%, then 22.5% or
  27.5%): at batch 1 a small model's time is mostly fixed per call, and pruning is what
  shortens the rest;
- ``node``: one weighted node quantised alone, to measure what it moves and what it saves;
- ``fallback``: quantise everything, keep in float the nodes that move a group most or
  cost more time than they save;
- ``combination``: passing structured pruning levels with the passing quantisations, and
  offline optimisation and scaler folding (``fold``) of the best.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair import convert as conv
from edgefair import modelio
from edgefair.convert.common import model_bytes
from edgefair.convert.quantize import CalibrationMethod, IntType, QuantFormat, QuantizeOptions, QuantMode
from edgefair.errors import ModelError
from edgefair.tune.fold import fold_scalers

FAMILIES = ("dynamic", "static", "fp16", "optimise", "structured", "magnitude")
STRUCTURED_STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
REFINE_STEPS = 2  # bisections between the largest passing structured level and the next failing one
MAGNITUDE_STEPS = (0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True, kw_only=True)
class VariantSpec:
    """Every knob of one variant. ``stage`` says why it was tried; it is not part of the build."""

    quantize: QuantizeOptions | None = None
    balanced_calibration: bool = False  # static int8: equal calibration rows per group
    prune_structured: float | None = None
    refit: bool = False  # structured: the next layer refitted on the calibration rows (convert.prune)
    prune_magnitude: float | None = None
    optimise: bool = False  # onnxruntime's offline (basic, standard ops only) graph optimisation
    fold_scalers: bool = False  # affine column scalers folded into the layer they feed (``fold``), first
    stage: str = "base"

    def knobs(self) -> dict[str, Any]:
        q = self.quantize
        return {
            "quantize": None if q is None else _plain(dataclasses.asdict(q)),
            "balanced_calibration": self.balanced_calibration,
            "prune_structured": self.prune_structured,
            "refit": self.refit,
            "prune_magnitude": self.prune_magnitude,
            "optimise": self.optimise,
            "fold_scalers": self.fold_scalers,
        }

    def key(self) -> str:
        """The build's identity (what the cache maps to a model hash)."""
        return json.dumps(self.knobs(), sort_keys=True)

    @property
    def family(self) -> str:
        q = self.quantize
        if q is not None:
            return {QuantMode.DYNAMIC_INT8: "dynamic", QuantMode.STATIC_INT8: "static", QuantMode.FP16: "fp16"}[q.mode]
        if self.prune_structured:
            return "structured"
        if self.prune_magnitude:
            return "magnitude"
        return "optimise"

    @property
    def name(self) -> str:
        parts = []
        if self.prune_structured:
            parts.append(
                f"structured {self.prune_structured:.1%}".replace(".0%", "%") + (" refit" if self.refit else "")
            )
        if self.prune_magnitude:
            parts.append(f"magnitude {self.prune_magnitude:.0%}")
        q = self.quantize
        if q is not None:
            parts.append(_quant_name(q, self.balanced_calibration))
        if self.optimise:
            parts.append("ort-optimised")
        if self.fold_scalers:
            parts.append("scaler folded")
        return " + ".join(parts)


def _plain(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _plain(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_plain(v) for v in doc]
    return doc.value if isinstance(doc, enum.Enum) else doc


def _quant_name(q: QuantizeOptions, balanced: bool) -> str:
    if q.mode is QuantMode.FP16:
        return "fp16"
    bits = [f"{q.mode.value} int8"]
    if q.mode is QuantMode.STATIC_INT8:
        bits.append(f"{q.quant_format.value} {q.activation_type.value[0]}8/{q.weight_type.value[0]}8")
        bits.append(q.calibration_method.value + (" balanced" if balanced else ""))
        if not q.keep_output_layer_float:
            bits.append("output quantised")
    bits.append("per-channel" if q.per_channel else "per-tensor")
    if q.reduce_range:
        bits.append("reduce-range")
    if q.nodes_to_exclude:
        bits.append("float: " + ", ".join(_short(n) for n in q.nodes_to_exclude))
    return " ".join(bits)


def _short(node: str) -> str:
    """A node name short enough for a table (ORT's fused names end in a fusion's name)."""
    name = node.removesuffix("/MatMulAddFusion_matmul").strip("/")
    return name[-28:] or node


def base_specs(families: Sequence[str]) -> list[VariantSpec]:
    """Stage 1, cheapest first: dynamic int8, fp16, optimisation, structured, static, magnitude."""
    dyn = QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)
    static = QuantizeOptions(mode=QuantMode.STATIC_INT8)
    out: list[VariantSpec] = []
    if "dynamic" in families:
        for per_channel, reduce_range in ((False, False), (True, False), (False, True), (True, True)):
            out.append(
                VariantSpec(quantize=dataclasses.replace(dyn, per_channel=per_channel, reduce_range=reduce_range))
            )
    if "fp16" in families:
        out.append(VariantSpec(quantize=QuantizeOptions(mode=QuantMode.FP16)))
    if "optimise" in families:
        out.append(VariantSpec(optimise=True))
    if "structured" in families:
        out.extend(VariantSpec(prune_structured=f) for f in STRUCTURED_STEPS)
        out.extend(VariantSpec(prune_structured=f, refit=True) for f in STRUCTURED_STEPS)
    if "static" in families:
        r = dataclasses.replace
        out.append(VariantSpec(quantize=static))
        out.extend(
            VariantSpec(quantize=q)
            for q in (
                r(static, quant_format=QuantFormat.QOPERATOR),
                r(static, activation_type=IntType.INT8),
                r(static, weight_type=IntType.UINT8),
                r(static, calibration_method=CalibrationMethod.ENTROPY),
                r(static, calibration_method=CalibrationMethod.PERCENTILE),
                r(static, per_channel=True),
                r(static, keep_output_layer_float=False),
            )
        )
        out.append(VariantSpec(quantize=static, balanced_calibration=True))
    if "magnitude" in families:
        out.extend(VariantSpec(prune_magnitude=f) for f in MAGNITUDE_STEPS)
    return out


def node_specs(base: VariantSpec, nodes: Sequence[str]) -> list[VariantSpec]:
    """One weighted node quantised alone (every other kept float), for each node."""
    assert base.quantize is not None
    return [
        dataclasses.replace(
            base,
            quantize=dataclasses.replace(base.quantize, nodes_to_exclude=tuple(n for n in nodes if n != node)),
            stage="node",
        )
        for node in nodes
    ]


def fallback_specs(
    base: VariantSpec, harmful: Sequence[str], slow: Sequence[str], nodes: Sequence[str]
) -> list[VariantSpec]:
    """Everything quantised but the ``k`` most harmful nodes (k = 1, 2, ...), the slow nodes,
    and both; never all nodes (that is the source)."""
    assert base.quantize is not None
    sets: list[tuple[str, ...]] = [tuple(harmful[:k]) for k in range(1, len(harmful) + 1)]
    if slow:
        sets.append(tuple(slow))
        sets.extend(tuple(dict.fromkeys([*s, *slow])) for s in list(sets[:-1]))
    out, seen = [], set()
    for keep in sets:
        if not keep or set(keep) >= set(nodes) or frozenset(keep) in seen:
            continue
        seen.add(frozenset(keep))
        out.append(
            dataclasses.replace(
                base, quantize=dataclasses.replace(base.quantize, nodes_to_exclude=keep), stage="fallback"
            )
        )
    return out


def refine_specs(levels: Mapping[float, bool], refit: bool = False) -> list[VariantSpec]:
    """The next structured level to try: halfway between the largest passing level (0 when
    none passes) and the smallest failing level above it; none when there is no such gap or
    it is under 1%. ``levels``: fraction -> passed (of plain or of refitted pruning)."""
    lo = max((f for f, ok in levels.items() if ok), default=0.0)
    hi = min((f for f, ok in levels.items() if not ok and f > lo), default=None)
    if hi is None or hi - lo < 0.01:
        return []
    return [VariantSpec(prune_structured=round((lo + hi) / 2, 4), refit=refit, stage="refine")]


def combination_specs(structured: Sequence[VariantSpec], quantised: Sequence[VariantSpec]) -> list[VariantSpec]:
    """Each passing structured level (plain or refit) with each passing quantisation (node
    lists dropped: the pruned graph is another graph), in the order given."""
    out = []
    for pruned in structured:
        for spec in quantised:
            assert spec.quantize is not None
            q = dataclasses.replace(spec.quantize, nodes_to_exclude=())
            out.append(
                dataclasses.replace(
                    spec, quantize=q, prune_structured=pruned.prune_structured, refit=pruned.refit, stage="combination"
                )
            )
    unique = {s.key(): s for s in out}
    return list(unique.values())


def build(
    source: onnx.ModelProto,
    spec: VariantSpec,
    calibration: Mapping[bool, Mapping[str, np.ndarray]],
    feature_columns: Sequence[str] | None,
) -> onnx.ModelProto:
    """The checked model of ``spec`` (ModelError when it cannot be built). ``calibration``:
    random rows under False, group-balanced rows under True (static int8 only)."""
    model = source
    rows = calibration[spec.balanced_calibration]
    if spec.fold_scalers:
        if spec.quantize is not None:  # int8 of the folded layer's input would see raw columns
            raise ModelError("scaler folding is for float variants: the folded layer's input is the unscaled columns")
        model, folded = fold_scalers(source)
        if not folded:
            raise ModelError("nothing to fold: no Scaler feeding a Gemm or MatMul (through a Concat) as fold describes")
    pruned_here = bool(spec.prune_structured and spec.refit)
    if pruned_here:
        assert spec.prune_structured is not None
        session = modelio.open_session(model_bytes(model))
        feeds = modelio.build_feeds(
            modelio.signature(session), rows, feature_columns=feature_columns, source="calibration rows"
        )
        model = conv.prune_structured(model, spec.prune_structured, feeds).model
        if spec.quantize is None and not spec.prune_magnitude:
            conv.validate(model, "refitted model")
    if spec.quantize is not None or (spec.prune_structured and not pruned_here) or spec.prune_magnitude:
        options = conv.ConvertOptions(
            quantize=spec.quantize,
            prune=spec.prune_magnitude,
            prune_structured=None if pruned_here else spec.prune_structured,
            feature_columns=tuple(feature_columns) if feature_columns else None,
            allow_larger=True,  # the search measures size; a larger variant just ranks last
        )
        static = spec.quantize is not None and spec.quantize.mode is QuantMode.STATIC_INT8
        model = conv.convert(model, options, None, rows if static else None).model
    if spec.optimise:
        model = optimised(model)
    return model


def optimised(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's offline graph optimisation at the basic level (constant folding,
    redundant nodes, standard-op fusions), saved: higher levels write com.microsoft ops,
    which the model-safety check refuses on the device."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgefair-opt-") as tmp:
        out = Path(tmp) / "opt.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(model_bytes(model), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot optimise the model: {str(exc).splitlines()[0][:200]}") from None
        result = onnx.load_model(str(out))
    conv.validate(result, "optimised model")
    return result
