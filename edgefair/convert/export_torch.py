"""Export PyTorch models (nn.Module, ``.pt2`` ExportedProgram, TorchScript) to ONNX; torch loads lazily.

- Every input keeps its name (the forward's argument names) and gets a dynamic batch axis.
- A ``.pt2`` whose batch is dynamic on every input goes through torch's dynamo exporter,
  which keeps the program's weights as initializers. One with a fixed batch is traced by the
  legacy exporter with its weights registered as parameters, so they stay initializers too
  (fp16 and pruning look for them); the parity check then runs it at other batch sizes and
  says so if its graph depends on the batch it was exported with.
- torch's TracerWarnings and exporter chatter are caught and summarised in one line.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair.errors import InputError, ModelError
from edgefair.modelio.session import Signature, TensorSpec

DEFAULT_OPSET = 17
_ORT = {
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "bool": "tensor(bool)",
    "float16": "tensor(float16)",
}


@dataclass(frozen=True)
class TorchExport:
    model: onnx.ModelProto
    signature: Signature  # what the source takes: names, types, row shapes (batch first)
    run_source: Callable[[Mapping[str, np.ndarray]], np.ndarray]  # feeds -> the first output
    notes: tuple[str, ...] = ()
    fixed_batch: int | None = None  # a .pt2 exported without a dynamic batch: the batch it has


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelError("exporting PyTorch models needs torch: pip install 'edgefair[torch]'") from None
    return torch


@contextlib.contextmanager
def quiet_torch(notes: list[str] | None = None) -> Iterator[None]:
    """torch's logging, prints and warnings while it exports: kept off the terminal; TracerWarnings
    counted into ``notes`` as one line."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR + 10)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as seen,
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("always")
            yield
    finally:
        logger.setLevel(level)
    tracer = [w for w in seen if w.category.__name__ == "TracerWarning"]
    if notes is not None and tracer:
        first = " ".join(str(tracer[0].message).split())[:160]
        notes.append(f"torch's tracer warned {len(tracer)} time(s) (first: {first})")


def _names(module: Any, count: int) -> list[str]:
    """The forward's argument names (``input`` for one unnamed tensor)."""
    try:
        params = [
            p
            for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = [p.name for p in params][:count]
    except (TypeError, ValueError):
        names = []
    if len(names) != count or len(set(names)) != count or names == ["args"]:
        return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]
    return names


def _output_names(count: int) -> list[str]:
    return ["probabilities"] if count == 1 else [f"output_{i}" for i in range(count)]


def _spec(name: str, tensor: Any) -> TensorSpec:
    dtype = str(tensor.dtype).replace("torch.", "")
    if dtype not in _ORT:
        raise ModelError(f"input {name!r} is {dtype}; edgefair feeds float, int and bool tensors")
    return TensorSpec(name, _ORT[dtype], ("batch", *(int(d) for d in tensor.shape[1:])))


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def _legacy(
    module: Any,
    samples: tuple[Any, ...],
    names: Sequence[str],
    outputs: int | Sequence[str],
    opset: int,
    notes: list[str],
) -> onnx.ModelProto:
    torch = _torch()
    out_names = _output_names(outputs) if isinstance(outputs, int) else list(outputs)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), quiet_torch(notes):
            torch.onnx.export(
                module,
                samples,
                buffer,
                input_names=list(names),
                output_names=out_names,
                dynamic_axes={n: {0: "batch"} for n in [*names, *out_names]},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:
        raise ModelError(f"torch.onnx.export failed: {exc}".splitlines()[0]) from None
    return onnx.load_model_from_string(buffer.getvalue())


def _runner(module: Any, names: Sequence[str], batch: int | None) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """The source model on feeds, in chunks of ``batch`` rows where its batch is fixed (padded)."""
    torch = _torch()

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feeds.values())))
        step = batch or 1024
        parts = []
        with torch.no_grad(), quiet_torch():
            for start in range(0, n, step):
                idx = np.arange(start, start + step) % n if batch else np.arange(start, min(n, start + step))
                args = [torch.from_numpy(np.ascontiguousarray(feeds[k][idx])) for k in names]
                parts.append(np.asarray(_first(module(*args)).detach().numpy(), np.float64)[: min(step, n - start)])
        return np.concatenate(parts)

    return run


def export_torch(
    module: Any,
    sample_input: Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """An nn.Module plus sample input(s) -> ONNX: inputs keep the forward's names (or
    ``input_names``), batch dynamic on every input and output."""
    return export_torch_module(
        module, sample_input, input_names=input_names, output_names=output_names, opset=opset
    ).model


def export_torch_module(
    module: Any,
    sample_input: Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> TorchExport:
    torch = _torch()
    with contextlib.suppress(NotImplementedError, AttributeError):
        module.eval()  # an ExportedProgram's module refuses eval()
    samples = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    names = list(input_names) if input_names else _names(module, len(samples))
    with torch.no_grad(), quiet_torch():
        out = module(*samples)
    count = len(out) if isinstance(out, (tuple, list)) else 1
    notes: list[str] = []
    model = _legacy(module, samples, names, list(output_names) if output_names else count, opset, notes)
    sig = Signature(tuple(_spec(n, t) for n, t in zip(names, samples, strict=True)), ())
    return TorchExport(model, sig, _runner(module, names, None), tuple(notes))


def _registered(inner: Any) -> Any:
    """An ExportedProgram's module held without registering it (it refuses train()/eval(), which
    the legacy exporter calls on submodules), its weights registered as this module's own, so the
    tracer makes them initializers, not Constant nodes."""
    torch = _torch()

    class Registered(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "inner", inner)
            for i, (name, param) in enumerate(inner.named_parameters()):
                param.requires_grad_(False)
                self.register_parameter(f"w{i}_{name.replace('.', '_')}", param)
            for i, (name, buffer) in enumerate(inner.named_buffers()):
                self.register_buffer(f"b{i}_{name.replace('.', '_')}", buffer)

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    return Registered()


def _program_inputs(program: Any) -> tuple[list[str], list[Any]]:
    user = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    return user, [nodes[n].meta.get("val") for n in user]


def load_pt2(path: Path, opset: int = DEFAULT_OPSET) -> TorchExport:
    """A ``.pt2`` ExportedProgram (torch.export.save) -> ONNX, with what parity needs."""
    import zipfile

    if not zipfile.is_zipfile(path):  # torch.export.save writes a zip archive: say so before torch loads
        raise ModelError(f"{path}: not a torch.export program (not a zip archive, as torch.export.save writes)")
    torch = _torch()
    try:
        with quiet_torch():
            program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a torch.export program ({type(exc).__name__})") from None
    names, vals = _program_inputs(program)
    example = getattr(program, "example_inputs", None)
    if not example or not example[0]:
        raise InputError(f"{path}: no example inputs stored in the program; save it with torch.export.save")
    samples = tuple(example[0])
    dynamic = all(v is not None and not isinstance(v.shape[0], int) for v in vals)
    outputs = len(program.graph_signature.user_outputs)
    sig = Signature(tuple(_spec(n, t) for n, t in zip(names, samples, strict=True)), ())
    inner = program.module()
    notes: list[str] = []
    if dynamic:
        try:
            with quiet_torch(notes):
                onx = torch.onnx.export(
                    program, (), input_names=names, output_names=_output_names(outputs), dynamo=True, optimize=True
                )
        except ImportError:
            raise ModelError("exporting a .pt2 needs onnxscript: pip install 'edgefair[torch]'") from None
        except Exception as exc:
            raise ModelError(f"torch.onnx.export (dynamo) failed: {exc}".splitlines()[0]) from None
        model = onx.model_proto
        return TorchExport(model, sig, _runner(inner, names, None), tuple(notes))
    batch = int(samples[0].shape[0])
    model = _legacy(_registered(inner), samples, names, outputs, opset, notes)
    return TorchExport(model, sig, _runner(inner, names, batch), tuple(notes), batch)


def load_torchscript(path: Path, sig: Signature, opset: int = DEFAULT_OPSET) -> TorchExport:
    """A TorchScript file, traced with inputs shaped as ``sig`` says (from the sample data)."""
    torch = _torch()
    try:
        module = torch.jit.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a TorchScript file ({type(exc).__name__})") from None
    names = [s.name for s in sig.inputs]
    samples = tuple(torch.zeros((2, *(int(d or 1) for d in s.shape[1:])), dtype=_dtype(s)) for s in sig.inputs)
    with torch.no_grad(), quiet_torch():
        out = module(*samples)
    count = len(out) if isinstance(out, (tuple, list)) else 1
    notes: list[str] = []
    model = _legacy(module, samples, names, count, opset, notes)
    return TorchExport(model, sig, _runner(module, names, None), tuple(notes))


def torchscript_names(path: Path) -> list[str]:
    """A TorchScript module's forward argument names (without ``self``)."""
    torch = _torch()
    try:
        module = torch.jit.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a TorchScript file ({type(exc).__name__})") from None
    try:
        args = [a.name for a in module.forward.schema.arguments][1:]
    except AttributeError:
        args = []
    return args or ["input"]


def _dtype(spec: TensorSpec) -> Any:
    torch = _torch()
    reverse = {v: k for k, v in _ORT.items()}
    return getattr(torch, reverse.get(spec.type, "float32"))
