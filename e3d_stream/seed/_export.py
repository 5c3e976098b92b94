"""Convert an upstream ``.pth`` to ONNX (and simplified ONNX), and print ATC command lines.

Replaces the seed's three manual steps (SPEC C)::

    Efficient-3DCNNs_pth2onnx.py CKPT.pth X.onnx          -> export_onnx(...)
    python -m onnxsim X.onnx X_sim.onnx --dynamic-input-shape  (simplify=True)
    atc --model=X_sim.onnx ... --input_shape="image:B,..."  -> atc_command(...)

and adds the check the seed leaves out: the written file is run under ONNX
Runtime against torch on a random batch, and a difference above
``tolerance * max|logit|`` is an error.

Conversion notes (the seed's gotchas):

* The legacy TorchScript-based exporter (``dynamo=False``) is used. The new
  ``torch.export`` exporter needs ``onnxscript`` (not a dependency here) and
  emits opset 18+, while ATC accepts opset 11.
* The final average pool's kernel is taken from the feature map while the
  model is traced, so it is a constant in the graph: an exported model accepts
  only the clip size it was exported with (3 x 16 x 112 x 112 by default).
  Only the batch axis is dynamic (or fixed with ``batch=``).
* The file is always self-contained (no external-data side file), which is
  what ATC and ``onnxsim`` expect.
* ``uint8_input=True`` puts ``Cast(float32)`` and ``Sub(mean)`` (the
  reference's float32 arithmetic, SPEC A.7) in front of the network: the input
  ``image`` is then raw uint8 clips (a quarter of the bytes to copy), and ONNX
  Runtime, TensorRT and ATC models built from the file take them directly.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .._fsutil import make_output_dir
from ..errors import BackendUnavailableError, ConfigError, OutputError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from onnx import ModelProto, ValueInfoProto
    from torch import nn

INPUT_NAME = "image"
OUTPUT_NAME = "class"
#: opsets the legacy exporter writes; ATC (CANN 5.x/6.x) needs 11
OPSETS = tuple(range(9, 21))
ATC_LOG_LEVELS = ("debug", "info", "warning", "error", "null")
_SOC_PATTERN = re.compile(r"Ascend[0-9A-Za-z]+")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how well it agrees with torch."""

    path: str
    opset: int
    batch: int | None  # None: dynamic batch axis
    input_shape: tuple[str | int, ...]  # e.g. ('batch', 3, 16, 112, 112)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    simplified: bool
    max_abs_diff: float | None  # None when check=False
    max_abs_logit: float | None
    arch: str | None = None
    input_dtype: str = "float32"


def _require(module: str, extra: str = "onnx") -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"{module} is not installed: pip install 'e3d_stream[{extra}]'") from exc


def _check_choice(name: str, value: object, allowed: Collection[object]) -> None:
    if value not in allowed:
        raise ConfigError(f"invalid {name}={value!r}; allowed: {list(allowed)}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"invalid {name}={value!r}: expected a positive integer")
    return value


def _model_and_shape(checkpoint_or_model: nn.Module | str | os.PathLike[str], arch_opts: dict[str, Any]
                     ) -> tuple[nn.Module, str | None, tuple[int, int]]:
    """Load or take the model; return ``(model, arch, (T, S))``."""
    torch = _require("torch", "torch")
    size = arch_opts.get("sample_size") or 112
    duration = arch_opts.get("sample_duration") or 16
    if isinstance(checkpoint_or_model, torch.nn.Module):
        unknown = sorted(set(arch_opts) - {"sample_size", "sample_duration"})
        if unknown:
            raise ConfigError(f"model options {unknown} only apply when exporting a checkpoint path")
        model: nn.Module = checkpoint_or_model.eval()
        return model, None, (duration, size)
    from ..models.checkpoint import load_checkpoint

    model, info = load_checkpoint(cast("str | os.PathLike[str]", checkpoint_or_model), **arch_opts)
    return model, info.arch, (info.sample_duration, info.sample_size)


def _trace_to_onnx(model: nn.Module, example: torch.Tensor, *, opset: int, dynamic: bool) -> ModelProto:
    """Export with the legacy exporter into memory; return the ModelProto."""
    import torch

    onnx = _require("onnx")
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        # the constant pool kernel (TracerWarning) and the legacy-exporter
        # deprecation notice are both expected; see the module docstring
        warnings.simplefilter("ignore")
        try:
            # the legacy exporter writes to a file object; torch annotates only paths
            torch.onnx.export(model, (example,), buffer,  # type: ignore[arg-type]
                              dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, do_constant_folding=True)
        except TypeError as exc:  # a torch without the legacy exporter
            raise BackendUnavailableError(f"this torch cannot export with dynamo=False: {exc}") from exc
        except Exception as exc:
            raise ConfigError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    proto: ModelProto = onnx.load_from_string(buffer.getvalue())
    return proto


def _simplify(proto: ModelProto) -> ModelProto:
    onnxsim = _require("onnxsim")
    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as exc:
        raise ConfigError(f"onnxsim failed: {type(exc).__name__}: {exc}") from exc
    if not ok:
        raise ConfigError("onnxsim could not validate the simplified model")
    result: ModelProto = simplified
    return result


def _device_of(model: nn.Module) -> torch.device:
    # a model loaded with device="cuda" is traced and checked where it lives
    import torch

    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _io_shape(value_info: ValueInfoProto) -> tuple[str | int, ...]:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def _save(proto: ModelProto, out_path: Path) -> None:
    onnx = _require("onnx")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ConfigError(f"exported graph is not valid ONNX: {exc}") from exc
    make_output_dir(out_path.parent)
    try:
        onnx.save_model(proto, str(out_path), save_as_external_data=False)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {out_path}: {exc.strerror or exc}", str(out_path)) from exc


def _with_uint8_input(model: nn.Module) -> nn.Module:
    """``model`` behind ``x.float() - mean``: exported as Cast + Sub at the front of the graph."""
    import torch

    from ..constants import MEAN_RGB_F32

    class Uint8Input(torch.nn.Module):
        mean: torch.Tensor  # a registered buffer

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.from_numpy(MEAN_RGB_F32.reshape(1, 3, 1, 1, 1).copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(x.to(torch.float32) - self.mean)
            return out

    return Uint8Input(model).to(_device_of(model)).eval()


def compare_with_onnxruntime(model: nn.Module, onnx_path: str | os.PathLike[str], inputs: np.ndarray
                             ) -> tuple[float, float]:
    """Run ``inputs`` (float32 or uint8 ndarray, what the graph takes) through torch and ONNX Runtime.

    Returns ``(max |torch - ort|, max |torch logit|)``.
    """
    import numpy as np
    import torch

    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # share the caller's CPU budget
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    with torch.no_grad():
        want = model(torch.from_numpy(inputs).to(_device_of(model))).cpu().numpy()
    if got.shape != want.shape:
        raise ConfigError(f"ONNX output shape {got.shape} differs from torch {want.shape}")
    return float(np.abs(got - want).max()), float(np.abs(want).max())


def export_onnx(checkpoint_or_model: nn.Module | str | os.PathLike[str], out_path: str | os.PathLike[str], *,
                opset: int = 11, batch: int | None = None,
                simplify: bool = True, check: bool = True, tolerance: float = 1e-4, seed: int = 0,
                uint8_input: bool = False, **arch_opts: Any) -> ExportResult:
    """Export a checkpoint path (or an ``nn.Module``) to one self-contained ``.onnx``.

    ``arch_opts`` go to :func:`~e3d_stream.models.load_checkpoint` (``arch``,
    ``width_mult``, ``sample_size`` ...); with a module only ``sample_size``
    and ``sample_duration`` apply, and the module is put in ``eval()`` mode. The input is ``image``
    (N, 3, T, S, S) float32, the output ``class`` (N, classes); N is dynamic
    unless ``batch`` fixes it; ``uint8_input`` makes the input raw uint8 clips
    (the mean is subtracted in the graph). With ``check`` the written file is compared
    with torch on a random batch (N = ``batch`` or 2, values like
    mean-subtracted pixels) and a ConfigError is raised when
    ``max|diff| > tolerance * max|logit|``.
    """
    import numpy as np

    _check_choice("opset", opset, OPSETS)
    if batch is not None:
        _positive_int("batch", batch)
    make_output_dir(Path(out_path).parent)  # before the (slow) trace: an impossible target fails at once
    model, arch, (duration, size) = _model_and_shape(checkpoint_or_model, arch_opts)
    import torch

    out_path = Path(out_path)
    if uint8_input:
        model = _with_uint8_input(model)
    dtype = torch.uint8 if uint8_input else torch.float32
    example = torch.zeros(batch or 1, 3, duration, size, size, device=_device_of(model), dtype=dtype)
    proto = _trace_to_onnx(model, example, opset=opset, dynamic=batch is None)
    if simplify:
        proto = _simplify(proto)
    _save(proto, out_path)
    diff = peak = None
    if check:
        rng = np.random.default_rng(seed)
        shape = (batch or 2, 3, duration, size, size)
        if uint8_input:
            inputs = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            inputs = (rng.standard_normal(shape) * 50).astype(np.float32)
        diff, peak = compare_with_onnxruntime(model, out_path, inputs)
        if diff > tolerance * max(peak, 1e-12):
            raise ConfigError(f"{out_path}: ONNX Runtime differs from torch by {diff:.3g} "
                              f"(> {tolerance:g} x max|logit| {peak:.3g})")
    return ExportResult(
        path=str(out_path), opset=opset, batch=batch, input_shape=_io_shape(proto.graph.input[0]),
        input_names=tuple(i.name for i in proto.graph.input),
        output_names=tuple(o.name for o in proto.graph.output),
        simplified=simplify, max_abs_diff=diff, max_abs_logit=peak, arch=arch,
        input_dtype="uint8" if uint8_input else "float32",
    )


def default_om_name(onnx_path: str | os.PathLike[str], batch: int) -> str:
    """``dir/Efficient-3DCNNs_sim.onnx``, 4 -> ``dir/Efficient-3DCNNs_bs4`` (the seed's naming)."""
    path = Path(onnx_path)
    stem = path.stem[:-4] if path.stem.endswith("_sim") else path.stem
    return str(path.with_name(f"{stem}_bs{batch}"))


def atc_command(onnx_path: str | os.PathLike[str], *, batch: int, soc_version: str = "Ascend310P3",
                output: str | None = None,
                sample_size: int = 112, sample_duration: int = 16, log: str = "error") -> str:
    """The ATC command line that builds a static batch-``batch`` ``.om`` (SPEC C).

    Same flags as the seed: ``--framework=5 --input_format=NCDHW
    --input_shape="image:B,3,16,112,112" --log=error --soc_version=...``;
    ``output`` defaults to :func:`default_om_name` (ATC appends ``.om``). The
    soc version is what ``npu-smi info`` shows, e.g. ``Ascend310P3``,
    ``Ascend310``.
    """
    _positive_int("batch", batch)
    _positive_int("sample_size", sample_size)
    _positive_int("sample_duration", sample_duration)
    _check_choice("log", log, ATC_LOG_LEVELS)
    if not isinstance(soc_version, str) or not _SOC_PATTERN.fullmatch(soc_version):
        raise ConfigError(f"invalid soc_version={soc_version!r}: expected Ascend<model> such as "
                          "Ascend310, Ascend310P3, Ascend910B (see npu-smi info)")
    output = output or default_om_name(onnx_path, batch)
    shape = f"{INPUT_NAME}:{batch},3,{sample_duration},{sample_size},{sample_size}"
    return (f"atc --model={shlex.quote(str(onnx_path))} --framework=5 --output={shlex.quote(output)} "
            f'--input_format=NCDHW --input_shape="{shape}" --log={log} --soc_version={soc_version}')


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,4,8"`` -> ``(1, 4, 8)``; ConfigError on anything but positive integers."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"invalid batch list {text!r}: expected comma-separated positive integers") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"invalid batch list {text!r}: expected comma-separated positive integers")
    return values
