"""Load and save upstream Efficient-3DCNNs checkpoints (SPEC C).

An upstream ``.pth`` is ``{"epoch", "arch", "state_dict", "optimizer",
"best_prec1"}``; keys usually carry DataParallel's ``module.`` prefix and the
tensors may have been saved from CUDA. :func:`load_checkpoint` reads it on the
CPU, strips the prefix, resolves the architecture (``arch`` from the file,
options from the arguments, else from the weight shapes, else upstream
defaults), checks every key and shape, and returns the model in ``eval()``
mode. Any disagreement is a :class:`~e3d_stream.errors.CheckpointError` that
names the keys and shapes involved.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .._fsutil import make_output_dir, output_error
from ..constants import UCF101_CLASSES
from ..errors import BackendUnavailableError, CheckpointError, ConfigError
from . import ARCHITECTURES, get_spec, resolve_options
from .shapes import infer_options, split_arch

_PREFIX = "module."
_SHOW = 8  # keys listed per category in an error message


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded: the architecture, its resolved options and the file's metadata.

    ``options`` holds the constructor options actually used (read-only);
    ``sample_size`` / ``sample_duration`` give the clip shape the model takes
    (given, else the upstream default 112 / 16).
    """

    arch: str
    num_classes: int
    epoch: int | None
    options: Mapping[str, Any] = field(repr=True)
    path: str
    best_prec1: float | None = None
    n_parameters: int = 0
    sample_size: int = 112  # the clip size the model expects (H = W)
    sample_duration: int = 16  # frames per clip

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


def _fmt_shape(shape: Iterable[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW]) + (f", ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")
    return f"\n  {title} ({len(items)}): {shown}"


def read_checkpoint(path: str | os.PathLike[str], *, trusted: bool = False
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``path`` on the CPU; return ``(state_dict without 'module.', metadata)``.

    ``metadata`` holds ``arch``, ``epoch`` and ``best_prec1`` when present. A
    bare state dict (no wrapper) is accepted with empty metadata. Files are
    read with ``weights_only=True`` (no arbitrary code); ``trusted=True``
    allows full unpickling for old files that store other Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: cannot be read with weights_only=True ({exc}); "
                              "if you trust the file, load it with trusted=True") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {exc}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state, meta = obj["state_dict"], {k: obj.get(k) for k in ("arch", "epoch", "best_prec1")}
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        raise CheckpointError(f"{path}: expected an upstream checkpoint dict with 'state_dict' "
                              f"(or a bare state dict), got {type(obj).__name__}")
    stripped = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state.items()}
    return stripped, meta


def _resolve_arch(requested: str | None, saved: str | None, path: str | os.PathLike[str]
                  ) -> tuple[str, dict[str, Any]]:
    base_req, opts_req = split_arch(requested) if requested else (None, {})
    base_saved, opts_saved = split_arch(saved) if saved else (None, {})
    if base_req and base_saved and base_req != base_saved:
        raise CheckpointError(f"{path}: wrong arch: the checkpoint was saved as arch={saved!r}, "
                              f"but arch={requested!r} was requested")
    arch = base_req or base_saved
    if arch is None:
        raise CheckpointError(f"{path}: the checkpoint names no 'arch'; pass one of {sorted(ARCHITECTURES)}")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown arch {arch!r}; allowed: {sorted(ARCHITECTURES)}")
    return arch, {**opts_saved, **opts_req}


def _compare(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
             ) -> tuple[list[str], list[str], list[str]]:
    missing = [f"{k} {_fmt_shape(v.shape)}" for k, v in model_state.items()
               if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [f"{k} {_fmt_shape(v.shape)}" for k, v in state.items() if k not in model_state]
    mismatched = [f"{k}: checkpoint {_fmt_shape(state[k].shape)} vs model {_fmt_shape(v.shape)}"
                  for k, v in model_state.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, mismatched


def load_checkpoint(path: str | os.PathLike[str], *, arch: str | None = None, device: str | torch.device = "cpu",
                    trusted: bool = False, **arch_opts: Any) -> tuple[nn.Module, CheckpointInfo]:
    """Load an upstream ``.pth`` into its architecture; return ``(model.eval(), CheckpointInfo)``.

    ``arch`` defaults to the checkpoint's own and must agree with it when both
    are known. ``arch_opts`` are :func:`~e3d_stream.models.build_model` options
    (``num_classes``, ``width_mult``, ``model_depth``, ...); those not given
    are read from the weight shapes where possible (class count from the
    classifier, ResNet depth and shortcut, ResNeXt cardinality, SqueezeNet
    version, ShuffleNet groups, ShuffleNetV2 width), else upstream defaults.
    The classifier's dropout probability is irrelevant in eval mode, so any
    ``p`` loads. Loading is strict, except that ``num_batches_tracked``
    buffers (absent from pre-0.4.1 files, unused in eval) may be missing.
    """
    state, meta = read_checkpoint(path, trusted=trusted)
    arch, arch_string_opts = _resolve_arch(arch, meta.get("arch"), path)
    spec = get_spec(arch)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    given = {k: v for k, v in arch_opts.items() if v is not None}
    options = {**infer_options(arch, shapes), **arch_string_opts, **given}

    head = shapes.get(spec.classifier)
    saved_classes = head[0] if head else None
    num_classes = options.pop("num_classes", None)
    if num_classes is not None and saved_classes is not None and num_classes != saved_classes:
        assert head is not None  # saved_classes is head[0]
        raise CheckpointError(f"{path}: wrong class count: classifier {spec.classifier} has shape "
                              f"{_fmt_shape(head)} ({saved_classes} classes) but num_classes={num_classes}")
    num_classes = num_classes or saved_classes or UCF101_CLASSES
    kwargs = resolve_options(arch, num_classes=num_classes, **options)
    model = spec(**kwargs)

    missing, unexpected, mismatched = _compare(model.state_dict(), state)
    if missing or unexpected or mismatched:
        used = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        msg = f"{path}: the weights do not fit arch={arch!r} ({used})"
        if missing:
            msg += _listing("missing from the checkpoint", missing)
        if unexpected:
            msg += _listing("unexpected in the checkpoint", unexpected)
        if mismatched:
            msg += _listing("shape mismatch", mismatched)
        msg += "\n  check --arch and the options (--width_mult, --groups, --model_depth, --sample_size ...)"
        raise CheckpointError(msg)
    full = dict(state)
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in full:
            full[k] = torch.zeros_like(v)
    model.load_state_dict(full, strict=True)
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from exc
    try:
        model.to(target)
    except (AssertionError, RuntimeError) as exc:  # torch asserts when built without CUDA
        raise BackendUnavailableError(f"device {device!r} is not usable with this torch: {exc}") from exc
    model.eval()
    epoch = meta.get("epoch")
    best = meta.get("best_prec1")
    info = CheckpointInfo(
        arch=arch, num_classes=num_classes, epoch=int(epoch) if epoch is not None else None,
        options={k: v for k, v in kwargs.items() if k != "num_classes"}, path=str(path),
        best_prec1=float(best) if best is not None else None,
        n_parameters=sum(p.numel() for p in model.parameters()),
        sample_size=options.get("sample_size") or 112, sample_duration=options.get("sample_duration") or 16,
    )
    return model, info


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, arch: str, epoch: int = 0,
                    best_prec1: float = 0.0, optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None
                    ) -> Path:
    """Write ``model`` in upstream's training format; return the path.

    ``{"epoch", "arch", "state_dict", "optimizer", "best_prec1"}`` with the
    ``module.`` prefix that upstream's DataParallel training gives its keys, so
    the file loads both here and in upstream code. ``optimizer`` may be an
    optimizer (its ``state_dict()`` is saved) or a dict; default ``{}``.
    """
    get_spec(arch)
    inner = getattr(model, "module", model)  # unwrap DataParallel / DDP
    state = {_PREFIX + k: v.detach().cpu() for k, v in inner.state_dict().items()}
    if optimizer is None:
        optimizer = {}
    elif hasattr(optimizer, "state_dict"):
        optimizer = optimizer.state_dict()
    payload = {"epoch": int(epoch), "arch": arch, "state_dict": state, "optimizer": optimizer,
               "best_prec1": float(best_prec1)}
    path = Path(path)
    make_output_dir(path.parent)
    try:
        torch.save(payload, path)
    except (OSError, RuntimeError) as exc:   # torch's zip writer reports write failures as RuntimeError
        raise output_error(path, exc, "checkpoint") from exc
    return path
