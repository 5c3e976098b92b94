"""The options of an evaluation run: each declared once, typed, documented and validated here.

An :class:`EvalConfig` is seven small frozen groups plus two advanced hooks::

    EvalConfig
     ├── data:    DataOptions     what to read (video root, annotation, dataset layout, subset, frame source)
     ├── model:   ModelOptions    what to run (model file, backend, device, batch, threads)
     ├── decode:  DecodeOptions   how a worker turns a video into clips (resize, policy, limits)
     ├── test:    TestOptions     upstream's test-time options (crop, scale, normalisation, softmax, downsample, views)
     ├── pool:    PoolOptions     how many decode processes and ring slots
     ├── output:  OutputOptions   what is written and how the run is scored (folder, resume, bins, top-k)
     └── engine:  EngineOptions   one host, or shards on a Ray cluster

Each field is declared with :func:`option`: its default, its one-line help and,
for choices, the registry that implements them (``--resize`` choices are the keys
of ``RESIZERS``, never a second list). The command line is generated from these
declarations (:func:`add_arguments`), so a flag's default, choices and help cannot
drift from the library's. Every value is checked when its group is created, so a
bad option fails before any process starts or any model loads.

``EvalConfig.create(video_path=..., batch_size=4)`` takes the flat field names
(each is unique across groups) and routes them; :meth:`EvalConfig.replace` does
the same for changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .._fsutil import check_input_dir, make_output_dir
from ..errors import ConfigError

Source = Literal["direct", "rawframes", "jpeg-compat"]
Resize = Literal["exact", "fast"]
Compat = Literal["modelzoo"]
Tail = Literal["pad", "drop"]
StartMethod = Literal["spawn", "forkserver", "fork"]
Policy = Literal["seed"]
Engine = Literal["local", "ray"]

_REQUIRED: Any = object()


def _sources() -> tuple[str, ...]:
    from ..video._clips import SOURCES

    return tuple(SOURCES)


def _datasets() -> tuple[str, ...]:
    from ..video._formats import DATASETS

    return tuple(DATASETS)


def _mean_datasets() -> tuple[str, ...]:
    from ..constants import MEAN_DATASETS

    return tuple(MEAN_DATASETS)


def _crop_positions() -> tuple[str, ...]:
    from ..video._testtime import CROP_POSITIONS

    return CROP_POSITIONS


#: upstream dataset.py get_test_set: --test_subset -> the annotation's subset name
TEST_SUBSETS = {"val": "validation", "test": "testing"}


def _test_subsets() -> tuple[str, ...]:
    return tuple(TEST_SUBSETS)


def _resizers() -> tuple[str, ...]:
    from ..video._transforms import PUBLIC_RESIZERS

    return PUBLIC_RESIZERS


def _policies() -> tuple[str, ...]:
    from ..video._sampling import POLICIES

    return tuple(POLICIES)


def _tails() -> tuple[str, ...]:
    from ..seed._binio import TAIL_POLICIES

    return tuple(TAIL_POLICIES)


def _start_methods() -> tuple[str, ...]:
    from ..stream._pool import START_METHODS

    return tuple(START_METHODS)


def _backends() -> tuple[str, ...]:
    from ..sessions import BACKENDS

    return tuple(BACKENDS)


def _compat_modes() -> tuple[str, ...]:
    return get_args(Compat)


def option(default: Any = _REQUIRED, help: str = "", *, choices: Callable[[], Iterable[str]] | None = None,
           check: str | None = None, flag: str | None = None, cli: bool = True) -> Any:
    """Declare one option: default, help text, and how it is checked and shown on the command line.

    ``choices``: a function returning the allowed values (the registry that implements them).
    ``check``: ``"positive"`` (an int >= 1), ``"positive_or_none"``, ``"positive_number"`` (> 0),
    ``"non_negative_number"`` (>= 0), ``"path"`` (a non-empty str or os.PathLike). Options
    annotated ``bool`` must be a bool.
    ``flag``: the command-line name when it differs from ``--<field>``; ``cli=False`` keeps it off the CLI.
    """
    meta = {"help": help, "choices": choices, "check": check, "flag": flag, "cli": cli}
    if default is _REQUIRED:
        return field(metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def _validate(group: Any) -> None:
    """Check every field of ``group`` against its declaration (one place for all options)."""
    for f in dataclasses.fields(group):
        value = getattr(group, f.name)
        meta = f.metadata
        choices = meta.get("choices")
        if choices is not None and value is not None:
            allowed = tuple(choices())
            if value not in allowed:
                raise ConfigError(f"{f.name}={value!r} is not one of {', '.join(map(repr, allowed))}")
        if f.type == "bool" and not isinstance(value, bool):
            # a string like "false" would read as true
            raise ConfigError(f"{f.name} must be True or False, got {value!r}")
        check = meta.get("check")
        if check == "path":
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise ConfigError(f"{f.name} must be a path (str or os.PathLike), got {value!r}")
        elif check in ("positive", "positive_or_none"):
            if value is None and check == "positive_or_none":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                hint = " (None means no limit)" if check == "positive_or_none" else ""
                raise ConfigError(f"{f.name} must be a positive integer{hint}, got {value!r}")
        elif check in ("positive_number", "non_negative_number"):
            number = not isinstance(value, bool) and isinstance(value, (int, float))
            if not number or not (value > 0 if check == "positive_number" else value >= 0):
                bound = "> 0" if check == "positive_number" else ">= 0"
                raise ConfigError(f"{f.name} must be a number {bound}, got {value!r}")


class _Group:
    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class DataOptions(_Group):
    """What to read."""

    video_path: str = option(help="video root <root>/<label>/<id>.avi (or a rawframes root with --source rawframes)",
                             check="path")
    annotation_path: str = option(help="ucf101_01.json-style annotation", check="path")
    dataset: str = option("ucf101", "upstream's dataset layout: ucf101/hmdb51 <root>/<label>/<id>.avi, kinetics "
                          "<root>/<label>/<youtube_id>_<start>_<end>.mp4 (nested json), jester <root>/<id>/%%05d.jpg "
                          "(frame folders: --source rawframes)", choices=_datasets)
    subset: str = option("validation", "annotation subset to evaluate")
    test_subset: str | None = option(None, "upstream's name for the subset: val (validation) or test (testing); "
                                     "sets --subset", choices=_test_subsets)
    source: Source = option("direct", "direct: decode videos; rawframes: read image_%%05d.jpg folders; "
                            "jpeg-compat: decode + in-memory JPEG round trip like the reference's ffmpeg",
                            choices=_sources)
    limit: int | None = option(None, "evaluate only the first N videos", check="positive_or_none")
    #: (index, count): evaluate only contiguous part ``index`` of ``count`` (after ``limit``); engines set it
    shard: tuple[int, int] | None = option(None, "evaluate one contiguous part (index, count) of the list", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..video._clips import SOURCES
        from ..video._formats import DATASETS

        if self.test_subset is not None:
            mapped = TEST_SUBSETS[self.test_subset]
            if self.subset not in ("validation", mapped):
                raise ConfigError(f"test_subset={self.test_subset!r} means subset {mapped!r}, but subset="
                                  f"{self.subset!r} was given: pass one of them")
            object.__setattr__(self, "subset", mapped)   # frozen: set once, here
        layout = SOURCES[self.source].layout
        if layout not in DATASETS[self.dataset].layouts:
            raise ConfigError(f"dataset {self.dataset!r} is stored as frame folders: use source='rawframes' "
                              f"(--source rawframes), not {self.source!r}")
        if self.shard is not None:
            index, count = self.shard
            if not (isinstance(count, int) and isinstance(index, int) and count >= 1 and 0 <= index < count):
                raise ConfigError(f"shard must be (index, count) with 0 <= index < count, got {self.shard!r}")


@dataclass(frozen=True)
class ModelOptions(_Group):
    """What runs the clips."""

    model: str | None = option(None, ".onnx, .pth or .om (not needed for --backend simulated)")
    backend: str | None = option(None, "default: from the model's extension", choices=_backends)
    device: str | None = option(None, "cpu, cuda[:N], npu[:N], or a list of them (cuda:0,cuda:1; sim:0,sim:1 for "
                                "the simulated backend): one session per device (default: cpu; npu:0 for .om)")
    batch_size: int | None = option(None, "clips per inference batch (default: the model's static batch, else 16)",
                                    check="positive_or_none")
    threads: int | None = option(None, "inference threads (CPU backends)", check="positive_or_none")
    arch_options: dict[str, Any] = option({}, "architecture options for .pth models (arch, width_mult, ...)", cli=False)
    session_options: dict[str, Any] = option({}, "extra keyword arguments of the backend's session class", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device is not None:
            from ..sessions import split_devices

            split_devices(self.device)


@dataclass(frozen=True)
class DecodeOptions(_Group):
    """How a decode worker turns one video into clips."""

    resize: Resize = option("exact", "exact: the reference's PIL bilinear bytes (compiled kernel with the 'jit' "
                            "extra, else Pillow); fast: OpenCV (not bit-exact)",
                            choices=_resizers)
    policy: Policy = option("seed", "clip sampling policy", choices=_policies, cli=False)
    decode_threads: int = option(1, "FFmpeg threads per decode worker", check="positive")
    max_frames: int | None = option(500_000, "ledger videos longer than this (frames; None: no limit)",
                                    check="positive_or_none")
    max_pixels: int | None = option(8192 * 8192, "ledger videos larger than this (width x height; None: no limit)",
                                    check="positive_or_none")
    video_timeout: float = option(600.0, "seconds before a video's decode is abandoned and ledgered",
                                  check="positive_number")


@dataclass(frozen=True)
class TestOptions(_Group):
    """upstream's test-time options (opts.py names): spatial transform, normalisation, scoring."""

    scale_in_test: float = option(1.0, "Scale(int(112 / scale_in_test)) before the crop (upstream test transform)",
                                  check="positive_number")
    crop_position_in_test: str = option("c", "CornerCrop position: c (centre, the reference), tl, tr, bl, br",
                                        choices=_crop_positions)
    mean_dataset: str = option("activitynet", "mean subtracted (upstream mean.py; activitynet is the reference's "
                               "[114.7748, 107.7354, 99.4750]); non-default normalisation needs a float32 session",
                               choices=_mean_datasets)
    no_mean_norm: bool = option(False, "do not subtract the mean (upstream: ignored with --std_norm)")
    std_norm: bool = option(False, "also divide by upstream's std [38.76, 37.88, 40.03] / norm_value")
    norm_value: int = option(1, "ToTensor divides pixels by this (1: 0..255, 255: 0..1)", check="positive")
    no_softmax_in_test: bool = option(False, "average each clip's raw scores instead of its softmax")
    downsample: int = option(1, "upstream's test path: each 16-frame window cycled to 16*N, every N-th frame kept",
                             check="positive")
    views: str | None = option(None, "multi-view protocol CLIPSxCROPS beyond upstream (e.g. 10x3: 10 clips spread "
                               "evenly, 3 crops along the long side; crops 1, 3 or 5; CLIPS 'all': the seed's "
                               "windows); averaged per video. Not the seed's protocol")

    def geometry(self) -> Any:
        """The :class:`~e3d_stream.video._testtime.Geometry` of these options."""
        from ..video._testtime import Geometry

        return Geometry.from_test_options(self.scale_in_test, self.crop_position_in_test)

    def normalization(self) -> Any:
        """The :class:`~e3d_stream.video._testtime.Normalization` of these options."""
        from ..video._testtime import Normalization

        return Normalization.from_options(mean_dataset=self.mean_dataset, no_mean_norm=self.no_mean_norm,
                                          std_norm=self.std_norm, norm_value=self.norm_value)

    def view_protocol(self) -> Any:
        """The :class:`~e3d_stream.video._testtime.Views` of ``views``, or None for the seed's protocol."""
        from ..video._testtime import Views

        return None if self.views is None else Views.parse(self.views)

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..video._clips import check_views

        check_views(self.view_protocol(), self.geometry())   # int(112 / scale) must be a positive size


@dataclass(frozen=True)
class PoolOptions(_Group):
    """The decode processes and the shared-memory ring between them and the consumer."""

    workers: int = option(2, "decode worker processes", check="positive")
    queue_depth: int = option(64, "clips the decode workers may decode ahead of the dataset order, in all "
                              "(queue_depth // workers each, kept in the worker as uint8: 0.6 MB a clip); "
                              "a worker whose share is smaller than a video's clips waits for the head video; 64 = "
                              "torch DataLoader's default read-ahead of 2 batches of 16 per worker",
                              check="positive")
    start_method: StartMethod = option("spawn", "how worker processes start", choices=_start_methods)


@dataclass(frozen=True)
class OutputOptions(_Group):
    """What is written, and how videos are scored and counted."""

    output: str | None = option(None, "folder for result.json, val.json and the resume checkpoint")
    resume: bool = option(False, "continue the interrupted run in --output (a completed one is left as is)")
    overwrite: bool = option(False, "replace the results or checkpoint of an earlier run in --output")
    dump_bins: str | None = option(None, "also write seed-layout k.bin inputs here")
    info_path: str | None = option(None, "the .info file for --dump_bins")
    bins_tail: Tail = option("pad", "last .bin: pad to the batch, or drop (the reference)", choices=_tails,
                             flag="--tail")
    compat: Compat | None = option(None, "modelzoo: reproduce the reference's scoring defects (SPEC B)",
                                   choices=_compat_modes)
    topk: int = option(10, "classes kept per video in val.json", check="positive")
    strict: bool = option(False, "any failed or truncated video is a fatal error")
    report: str | None = option(None, "also write report.html (self-contained), per_class.csv and plots here")
    checkpoint_every: float = option(30.0, "seconds between resume checkpoints (0: after every batch)",
                                     check="non_negative_number")
    progress: bool = option(False, "show a progress bar", cli=False)


def _engines() -> tuple[str, ...]:
    return get_args(Engine)


@dataclass(frozen=True)
class EngineOptions(_Group):
    """Where the pipeline runs: one host, or shards of the video list on a Ray cluster."""

    engine: Engine = option("local", "local: one host; ray: shards of the list as Ray tasks, merged in order",
                            choices=_engines)
    address: str | None = option(None, "ray: cluster to join ('auto' or host:port); default: start a local "
                                 "Ray instance for the run and stop it after")
    shards: int | None = option(None, "ray: number of shards (default: several per accelerator unit)",
                                check="positive_or_none")
    ray_resource: str | None = option(None, "ray: the accelerator resource each shard takes one unit of "
                                      "(GPU, NPU or a custom name; default: none, CPU only)")


GROUPS: dict[str, type] = {"data": DataOptions, "model": ModelOptions, "decode": DecodeOptions,
                           "test": TestOptions, "pool": PoolOptions, "output": OutputOptions, "engine": EngineOptions}
#: flat field name -> group name (every field name is unique across groups)
_FIELD_GROUP = {f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}

DEFAULT_PRODUCER = "e3d_stream.video._clips:iter_video_clips"

_UINT8_NORM = ("mean_dataset / no_mean_norm / std_norm / norm_value other than the defaults need a session that "
               "takes float32 clips (the workers normalise them); a uint8 session subtracts the reference's "
               "activitynet mean itself. Torch: session_options={'input_dtype': 'float32'}; simulated: the same; "
               "ONNX: export without --uint8_input")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how: see the module docstring for the groups.

    Build it with :meth:`create` from flat keywords
    (``EvalConfig.create(video_path=..., annotation_path=..., model="m.onnx")``)
    or from the groups directly.
    """

    data: DataOptions
    model: ModelOptions = field(default_factory=ModelOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    test: TestOptions = field(default_factory=TestOptions)
    pool: PoolOptions = field(default_factory=PoolOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)
    #: "module:function" producing a video's clips in the workers (advanced; tests inject faults with it).
    producer: str = DEFAULT_PRODUCER
    #: extra keyword arguments for ``producer``.
    producer_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m, o = self.model, self.output
        if m.model is None and m.backend != "simulated":
            raise ConfigError("model is required (only backend='simulated' runs without one)")
        if (o.dump_bins is None) != (o.info_path is None):
            raise ConfigError("dump_bins and info_path go together (the seed layout needs both)")
        if o.resume and not o.output:
            raise ConfigError("resume needs the output folder of the interrupted run")
        if o.resume and o.overwrite:
            raise ConfigError("resume and overwrite contradict each other: pick one")
        if o.resume and o.dump_bins:
            raise ConfigError("resume with dump_bins is not supported: rerun the dump from scratch")
        for key, fixed in (("sample_size", 112), ("sample_duration", 16)):
            if m.arch_options.get(key, fixed) != fixed:
                raise ConfigError(f"{key}={m.arch_options[key]} is not supported by the evaluation's data path, "
                                  f"which makes (3, 16, 112, 112) clips; {key} is an architecture option for "
                                  f"'e3d-stream export' only")
        t = self.test
        views = t.view_protocol()
        if o.compat == "modelzoo" and views is not None and not views.is_default:
            raise ConfigError("compat='modelzoo' reproduces the seed's protocol: it cannot be combined with views")
        if not t.normalization().is_default and m.session_options.get("input_dtype") != "float32":
            backend = m.backend or (str(m.model).rsplit(".", 1)[-1] if m.model else "")
            if backend in ("simulated", "torch", "pth", "pt", "tar"):
                raise ConfigError(_UINT8_NORM)
        if ":" not in self.producer:
            raise ConfigError(f"producer must be 'module:function', got {self.producer!r}")

    @classmethod
    def create(cls, **flat: Any) -> EvalConfig:
        """An EvalConfig from flat option names (``video_path=``, ``batch_size=``, ...)."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        top: dict[str, Any] = {}
        for key, value in flat.items():
            if key in _FIELD_GROUP:
                groups[_FIELD_GROUP[key]][key] = value
            elif key in ("producer", "producer_options"):
                top[key] = value
            else:
                raise ConfigError(f"unknown option {key!r}; options are {', '.join(sorted(_FIELD_GROUP))}")
        missing = [k for k in ("video_path", "annotation_path") if k not in groups["data"]]
        if missing:
            raise ConfigError(f"missing required option(s): {', '.join(missing)}")
        return cls(**{name: GROUPS[name](**values) for name, values in groups.items()}, **top)

    def replace(self, **changes: Any) -> EvalConfig:
        """A copy with flat options changed (``cfg.replace(batch_size=4, resume=True)``)."""
        flat = self.flat()
        flat.update(changes)
        return EvalConfig.create(**flat)

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name."""
        out: dict[str, Any] = {}
        for name in GROUPS:
            group = getattr(self, name)
            out.update({f.name: getattr(group, f.name) for f in dataclasses.fields(group)})
        out["producer"], out["producer_options"] = self.producer, dict(self.producer_options)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, flat (result.json's ``config``)."""
        d = self.flat()
        for key in ("video_path", "annotation_path", "model", "output", "dump_bins", "info_path"):
            if d[key] is not None:
                d[key] = str(Path(d[key]))
        return d

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one."""
        keep = ("annotation_path", "dataset", "model", "backend", "batch_size", "source", "subset", "compat",
                "resize", "policy", "topk", "limit", "arch_options", "max_frames", "max_pixels",
                *(f.name for f in dataclasses.fields(TestOptions)))
        d = self.to_dict()
        return {k: d[k] for k in keep}

    def check_paths(self) -> None:
        """Fail before any work on an input that cannot be read or an output that cannot be made.

        Raises :class:`ConfigError` for the video root (missing, not a folder,
        unreadable) and the annotation; :class:`OutputError` naming an output
        folder that cannot be created.
        """
        check_input_dir(self.data.video_path, "video root")
        if not Path(self.data.annotation_path).is_file():
            raise ConfigError(f"annotation not found: {self.data.annotation_path}")
        o = self.output
        for folder in (o.output, o.dump_bins, o.report, None if o.info_path is None else str(Path(o.info_path).parent)):
            if folder:
                make_output_dir(folder)


# -- the command line, generated from the declarations --------------------------------------------

def add_arguments(parser: argparse.ArgumentParser | Any, group: type, names: Iterable[str] | None = None,
                  **overrides: Mapping[str, Any]) -> None:
    """Add ``--<field>`` arguments for the fields of ``group`` (all CLI fields, or ``names``).

    ``overrides`` maps a field name to argparse keyword changes (e.g. a different default).
    Booleans become ``store_true`` flags; choices come from the implementing registry.
    """
    fields = {f.name: f for f in dataclasses.fields(group)}
    for name in names if names is not None else [n for n, f in fields.items() if f.metadata.get("cli", True)]:
        f = fields[name]
        meta = f.metadata
        kwargs: dict[str, Any] = {"help": meta.get("help", ""), "dest": name}
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        elif isinstance(default, bool):
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = default
            kwargs["type"] = _arg_type(f)
        if meta.get("choices") is not None:
            kwargs["choices"] = tuple(meta["choices"]())
        kwargs.update(overrides.get(name, {}))
        parser.add_argument(meta.get("flag") or f"--{name}", **kwargs)


def _arg_type(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    text = str(f.type)
    if "float" in text:
        return float
    if "int" in text:
        return int
    return str


def from_namespace(args: argparse.Namespace, **extra: Any) -> EvalConfig:
    """An EvalConfig from parsed arguments: every attribute that names an option is used."""
    flat = {name: getattr(args, name) for name in _FIELD_GROUP if hasattr(args, name)}
    flat.update(extra)
    return EvalConfig.create(**flat)


__all__ = ["GROUPS", "TEST_SUBSETS", "DataOptions", "DecodeOptions", "EngineOptions", "EvalConfig", "ModelOptions",
           "OutputOptions", "PoolOptions", "TestOptions", "add_arguments", "from_namespace", "option"]
