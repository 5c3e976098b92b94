"""``evaluate(..., engine="ray")``: the video list in shards over a Ray cluster, merged exactly.

::

    driver (this process)                         Ray cluster (one task per shard)
    ─────────────────────                         ────────────────────────────────
    list_videos ─► plan: shard(items, i, n)        node A: shard 0 ─► evaluate(engine="local",
      (contiguous parts, always the same split)            shard=(0, n))  = the unchanged pipeline:
    shards.json (fingerprint, n, bounds) ───────►          decode workers ─► ring ─► session ─► top-k
    submit shard i: num_cpus = workers + 1,         node B: shard 1 ─► ...
      1 unit of --ray_resource                      node C: shard 2 ─► ...
            │                                               │ ShardOutcome: per-video results, ledger,
            ◄───────────────────────────────────────────────┘ clip counts, timings, node, seconds
    shards/<i>.pkl as each shard finishes (atomic)
    node/worker lost ─► resubmit (bounded); a Python error in a shard ─► fatal, named
            │
            ▼  merge in shard order = dataset order
    results = shard 0's ++ shard 1's ++ ...;  accuracy recomputed over ALL items
    Report ─► val.json, result.json (throughput["shards"], ["engine"] = "ray") ─► records removed

Why the merge is exact: every video lies wholly inside one contiguous shard,
and a video's score depends only on its own clips (softmax per clip, float32
mean over the video's clips in clip order; each clip's logits do not depend
on its batch neighbours, and every shard uses the same batch size and
padding rule). So the finalized per-video
results of disjoint shards are the single-host results, and concatenating
them in shard order restores the single-host order of ``val.json``. Accuracy
is then recomputed over every listed video exactly as ``build_report`` does
(a video without a score is a miss), never averaged over shards.

Shards: ``shards``, or :data:`SHARDS_PER_UNIT` per unit of ``ray_resource``
in the cluster (per node that can run one when no resource is named), at
most one per video; the same list and count always give the same split.

Shared storage: each shard lists and decodes the videos itself, on its node.
The video root, the annotation and the model file must be at the same path on
every node (an NFS mount, a shared volume, or a copy at identical paths). A
video the driver sees but a node reports missing stops the run with a
:class:`ConfigError` naming both, rather than silently counting it as a miss.

Faults. The driver owns the retries: a shard whose worker process or node
dies (Ray raises ``NodeDiedError``, ``WorkerCrashedError``, ``ObjectLostError``
...) is submitted again, at most :data:`MAX_RETRIES` more times; the driver
counts the submissions, so ``attempts`` in the per-shard section is exact
(including attempts that died before doing anything) and the reasons are
listed. A shard's result is merged only from the attempt that returned it, so
nothing is counted twice. A Python exception inside a shard is not retried: a
bug or a bad input fails the same way everywhere. The shard's own
:class:`E3DError` is raised with the shard and its first/last video prefixed
to its message; anything else becomes a :class:`WorkerError`.

``--compat modelzoo`` is refused: the reference's defects belong to one clip
stream (its last video is flushed by nothing; at batch size > 1 the trailing
partial batch of the whole stream is dropped), and shard boundaries are not
batch boundaries of that stream, so they cannot be reproduced per shard.

Output folder: ``shards.json`` (fingerprint, shard count, bounds) is written
before any shard runs, ``shards/<i>.pkl`` as each shard finishes (atomically);
``--resume`` runs only the shards without a record (refusing another
configuration, shard count or video list); the commit writes val.json, then
result.json, then removes the records. SIGINT/SIGTERM cancels the running
shards, keeps the records and raises :class:`PipelineInterrupted`: first
``ray.cancel`` (a KeyboardInterrupt in the task, so each shard closes its
pipeline, decode workers and shared-memory ring as on Ctrl-C), then
``force=True`` for any still running after :data:`CANCEL_GRACE_S`; a second
Ctrl-C forces at once.

Without ``address`` a local Ray instance is started for the run (loopback
only, no dashboard, a bounded object store) and stopped after; with
``address`` (``"auto"`` or host:port) the driver joins that cluster and leaves
it running. When this process is already connected (``ray.is_initialized()``)
that connection is used and left as it is.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import pickle
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .._fsutil import atomic_write_bytes, atomic_write_json
from ..errors import (
    BackendUnavailableError,
    ConfigError,
    E3DError,
    PipelineInterrupted,
    ResumeMismatchError,
    WorkerError,
)
from ..ledger import MISSING
from ..scoring._metrics import clip_accuracy, video_accuracy
from ..video._clips import SOURCES
from ..video._dataset import Annotation, VideoItem, list_videos, load_annotation, shard
from ._config import EvalConfig
from ._evaluate import _prepare_output, _StopFlag
from ._report import RESULT_NAME, Report, per_class_summary, versions, write_outputs
from ._state import CHECKPOINT_NAME, check_fingerprint

if TYPE_CHECKING:
    from tqdm import tqdm

SHARDS_INDEX = "shards.json"
SHARDS_DIR = "shards"
RECORD_FORMAT = 1
#: resubmissions of a shard after its worker or node died (so at most 1 + MAX_RETRIES attempts)
MAX_RETRIES = 3
#: default shards per accelerator unit (or per node): enough to balance uneven shards and to
#: lose little work with a node, few enough that per-shard start-up stays small
SHARDS_PER_UNIT = 4
#: object store of a local instance: shards return small results, the clips never leave a node
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
#: seconds an interrupted shard gets to close its pipeline before it is force-cancelled
CANCEL_GRACE_S = 10.0
_ACCELERATOR_OF = {"cuda": "GPU", "npu": "NPU"}


@dataclass(frozen=True)
class ShardPlan:
    """Contiguous part ``index`` of ``count``: items ``[start, end)`` of the evaluated list."""

    index: int
    count: int
    start: int
    end: int
    first: str | None
    last: str | None

    @property
    def videos(self) -> int:
        return self.end - self.start

    def where(self) -> str:
        return f"shard {self.index} of {self.count} (videos {self.first} .. {self.last})"


@dataclass(frozen=True)
class ShardOutcome:
    """What one shard task returns: its local run's :class:`Report` (finalized per-video
    results in dataset order, ledger, clip counts, timings) and where and how long it ran."""

    index: int
    report: Report
    node_id: str
    node_ip: str
    seconds: float

    @property
    def n_clips(self) -> int:
        return self.report.n_clips


def plan_shards(items: Sequence[VideoItem], count: int) -> list[ShardPlan]:
    """The shards of ``items``: :func:`~e3d_stream.video._dataset.shard` bounds, the same every time."""
    n, plans = len(items), list[ShardPlan]()
    for i in range(count):
        start, end = (n * i) // count, (n * (i + 1)) // count
        part = shard(items, i, count)
        plans.append(ShardPlan(i, count, start, end, part[0].video_id if part else None,
                               part[-1].video_id if part else None))
    return plans


# -- the task that runs on a node ------------------------------------------------------------------

def _task_device(device: str | None) -> str | None:
    """``cuda:K``/``npu:K`` -> index 0 when Ray gave this task its own device (it sets
    CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES to that unit, so index 0 is it)."""
    if device is None or "," in device:   # a device list: the shard uses the node's devices as listed
        return device
    import ray

    resource = _ACCELERATOR_OF.get(device.strip().lower().partition(":")[0])
    if resource and ray.get_runtime_context().get_accelerator_ids().get(resource):
        return f"{device.strip().lower().partition(':')[0]}:0"
    return device


@contextlib.contextmanager
def _spawn_without_main() -> Iterator[None]:
    """Spawned decode workers start without re-running the Ray worker's main script.

    ``spawn`` runs the parent's ``__main__`` file again in each child; in a Ray
    worker that is Ray's ``default_worker.py``, which imports Ray (~0.7 s and
    ~100 MB per decode worker, measured). The decode workers need nothing from
    it (their entry point and producer are named by module), so the file is
    hidden from multiprocessing while the shard runs, and put back after.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(getattr(main, "__spec__", None), "name", None):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _run_shard(cfg: EvalConfig, index: int, count: int) -> ShardOutcome:
    """One shard through the unchanged local pipeline (runs inside a Ray task)."""
    import ray

    from ._evaluate import evaluate

    t0 = time.perf_counter()
    device = _task_device(cfg.model.device)
    local = cfg.replace(engine="local", shard=(index, count), output=None, resume=False, overwrite=False,
                        progress=False, dump_bins=None, info_path=None, report=None, device=device)
    with _spawn_without_main():
        report = evaluate(local)
    return ShardOutcome(index=index, report=report, node_id=ray.get_runtime_context().get_node_id(),
                        node_ip=_node_ip_address(ray), seconds=time.perf_counter() - t0)


def _node_ip_address(ray: ModuleType) -> str:
    """``ray.util.get_node_ip_address()``, which Ray leaves unannotated (it returns the IP as a str)."""
    return cast("Callable[[], str]", ray.util.get_node_ip_address)()


# -- the driver --------------------------------------------------------------------------------------

def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("engine='ray' needs Ray: pip install 'e3d_stream[ray]'") from exc
    return ray


def evaluate_ray(cfg: EvalConfig) -> Report:
    """Evaluate ``cfg`` as shards on a Ray cluster; the :class:`Report` equals a single-host run's.

    See the module docstring for the protocol. Raises :class:`ConfigError` for
    options that cannot be sharded (``compat="modelzoo"``, ``dump_bins``, a
    preset ``shard``), :class:`BackendUnavailableError` without Ray,
    :class:`WorkerError` (or the shard's own :class:`E3DError`) when a shard
    fails, and :class:`PipelineInterrupted` on SIGINT/SIGTERM.
    """
    out = cfg.output
    if out.compat == "modelzoo":
        raise ConfigError("compat='modelzoo' cannot run on the ray engine: the reference's defects (last video "
                          "never scored, trailing partial batch dropped) belong to one clip stream, and shards "
                          "are not batches of that stream; run it with engine='local'")
    if out.dump_bins:
        raise ConfigError("dump_bins writes one seed-layout stream of batches: run it with engine='local'")
    if cfg.data.shard is not None:
        raise ConfigError("the ray engine chooses the shards itself; set shards=N instead of shard=(i, n)")
    if cfg.engine.ray_resource and cfg.model.device and "," in cfg.model.device:
        raise ConfigError(f"each shard takes one unit of {cfg.engine.ray_resource}: give one device "
                          f"(e.g. cuda:0), not the list {cfg.model.device!r}")
    ray = _import_ray()
    annotation = load_annotation(cfg.data.annotation_path)
    if out.output:
        done = _prepare_ray_output(cfg, annotation)
        if done is not None:
            return done
    items = list_videos(annotation, cfg.data.video_path, subset=cfg.data.subset,
                        source=SOURCES[cfg.data.source].layout, dataset=cfg.data.dataset)
    if cfg.data.limit is not None:
        items = items[: cfg.data.limit]
    records = _load_records(Path(out.output), cfg, items) if out.output and out.resume else None
    t0 = time.perf_counter()
    with _StopFlag() as stop, _connected(ray, cfg.engine.address):
        startup_s = time.perf_counter() - t0
        count = _shard_count(ray, cfg, len(items))   # also refuses a cluster where no shard fits
        driver = _Driver(ray, cfg, annotation, items, count, stop, records)
        report = driver.run(t0=t0, startup_s=startup_s)
    if stop.late_signum is not None:
        name = signal.Signals(stop.late_signum).name
        report = dataclasses.replace(report, notes=(*report.notes, f"{name} arrived after the results were "
                                                    f"written: the run is complete"))
    return report


@contextlib.contextmanager
def _connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Connect this process to Ray for the run, and leave everything as it was after.

    No ``address``: a local instance on loopback, stopped after. With one: join
    that cluster (not stopped). Already connected: use it as is. Ray sets some
    ``RAY_*`` variables in this process (auth mode, usage stats); they are
    restored when the run ends.
    """
    if ray.is_initialized():
        yield
        return
    saved = {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
    try:
        if address is None:
            # no token file in ~/.ray for a throw-away, loopback-only instance (the user's choice wins)
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            try:
                with _loopback_ip(True):
                    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                             object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            except Exception as exc:
                raise WorkerError(f"cannot start a local Ray instance: {exc}") from exc
        else:
            target = _resolve_address(address)
            loopback = _is_loopback(target)
            try:
                with _loopback_ip(loopback):
                    ray.init(address=target, **({"_node_ip_address": "127.0.0.1"} if loopback else {}))
            except Exception as exc:  # ConnectionError, ValueError (bad address), RuntimeError (auth) ...
                raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
        try:
            yield
        finally:
            ray.shutdown()   # a local instance stops; a joined cluster only loses this driver
    finally:
        for key in [k for k in os.environ if k.startswith("RAY_") and k not in saved]:
            del os.environ[key]
        os.environ.update(saved)


def _resolve_address(address: str) -> str:
    """``"auto"`` -> the address of the running cluster (RAY_ADDRESS, or the one ``ray start`` recorded)."""
    if address != "auto":
        return address
    try:
        from ray._private.services import get_ray_address_from_environment

        return get_ray_address_from_environment("auto", None) or address
    except Exception:  # private API: without it, let ray.init resolve "auto" itself
        return address


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _loopback_ip(enabled: bool) -> Iterator[None]:
    """Let ray.init use 127.0.0.1 as given.

    Ray (2.4x-2.6x, ``services.resolve_ip_for_localhost``) replaces a loopback
    node address by the host's routable one unless its multi-node switch is
    off, so a driver could neither start a loopback-only instance nor reach a
    cluster started on 127.0.0.1. The switch is turned off only during
    ``ray.init`` and restored right after.
    """
    # Any, not the module: ENABLE_RAY_CLUSTER is gone from newer Rays, so it is read only after hasattr
    constants: Any = None
    if enabled:
        with contextlib.suppress(ImportError):
            from ray._private import ray_constants as constants
    if constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    old = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = old


def _task_resources(cfg: EvalConfig) -> dict[str, Any]:
    """Ray options of a shard task: its decode workers + the consumer, and one accelerator unit."""
    opts: dict[str, Any] = {"num_cpus": cfg.pool.workers + 1}
    name = cfg.engine.ray_resource
    if name == "GPU":
        opts["num_gpus"] = 1
    elif name:
        opts["resources"] = {name: 1}
    return opts


def _shard_count(ray: ModuleType, cfg: EvalConfig, n_items: int) -> int:
    """``shards``, or SHARDS_PER_UNIT per unit of ``ray_resource`` (per node without one); at most one per video.

    Refuses a cluster where no node can run a shard at all (the task would wait forever).
    """
    need_cpus, name = cfg.pool.workers + 1, cfg.engine.ray_resource
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = [r for r in nodes if r.get("CPU", 0) >= need_cpus and (not name or r.get(name, 0) >= 1)]
    if not fits:
        what = f"{need_cpus} CPUs" + (f" and 1 {name}" if name else "")
        raise ConfigError(f"no node of the Ray cluster offers {what} (a shard needs its {cfg.pool.workers} decode "
                          f"workers + 1 CPUs{' and one unit of ' + name if name else ''}); lower --workers or "
                          f"check --ray_resource")
    if cfg.engine.shards is not None:
        return min(cfg.engine.shards, n_items)
    units = sum(int(r.get(name, 0)) for r in fits) if name else len(fits)
    return max(1, min(n_items, SHARDS_PER_UNIT * units))


@dataclass(frozen=True)
class _Records:
    """The shard records of an interrupted run, checked against this one (read before Ray starts)."""

    count: int
    outcomes: dict[int, ShardOutcome]   # shard index -> ShardOutcome
    attempts: dict[int, int]            # shard index -> attempts it took
    retried: dict[int, list[str]]       # shard index -> reasons of the lost attempts


def _index_payload(cfg: EvalConfig, items: Sequence[VideoItem], count: int) -> dict[str, Any]:
    return {"format": RECORD_FORMAT, "fingerprint": cfg.fingerprint(), "count": count,
            "bounds": [[p.start, p.end, p.first, p.last] for p in plan_shards(items, count)]}


def _load_records(folder: Path, cfg: EvalConfig, items: Sequence[VideoItem]) -> _Records:
    """Raises :class:`ResumeMismatchError` for another configuration, shard count or video list."""
    try:
        saved = json.loads((folder / SHARDS_INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the shard records in {folder}: {exc}") from exc
    if saved.get("format") != RECORD_FORMAT:
        raise ResumeMismatchError(f"{folder / SHARDS_INDEX} was written by an incompatible version")
    check_fingerprint(saved["fingerprint"], cfg.fingerprint(), folder)
    count = saved["count"]
    if cfg.engine.shards is not None and min(cfg.engine.shards, len(items)) != count:
        raise ResumeMismatchError(f"cannot resume {folder}: it was split into {count} shards, now "
                                  f"{cfg.engine.shards} (leave --shards out to keep the saved count)")
    if _index_payload(cfg, items, count)["bounds"] != saved["bounds"]:
        raise ResumeMismatchError(f"cannot resume {folder}: the list of videos changed since the shards were "
                                  f"planned")
    outcomes: dict[int, ShardOutcome] = {}
    attempts: dict[int, int] = {}
    retried: dict[int, list[str]] = {}
    for i in range(count):
        path = folder / SHARDS_DIR / f"{i}.pkl"
        if not path.is_file():
            continue
        with open(path, "rb") as fh:
            record = pickle.load(fh)
        if record.get("format") != RECORD_FORMAT or record["outcome"].index != i:
            raise ResumeMismatchError(f"{path} does not belong to this run")
        outcomes[i], attempts[i], retried[i] = record["outcome"], record["attempts"], list(record["retried"])
    return _Records(count, outcomes, attempts, retried)


class _Driver:
    """Submits the shards, retries lost ones, records finished ones, merges, commits."""

    def __init__(self, ray: ModuleType, cfg: EvalConfig, annotation: Annotation, items: Sequence[VideoItem],
                 count: int, stop: _StopFlag,
                 records: _Records | None) -> None:
        self.ray, self.cfg, self.annotation, self.items, self.stop = ray, cfg, annotation, items, stop
        self.folder = Path(cfg.output.output) if cfg.output.output else None
        self.outcomes: dict[int, ShardOutcome] = dict(records.outcomes) if records else {}
        self.attempts: dict[int, int] = dict(records.attempts) if records else {}
        self.retried: dict[int, list[str]] = dict(records.retried) if records else {}
        self.resumed = set(self.outcomes)
        self.found_here = {it.video_id for it in items if it.path is not None}
        self.plans = plan_shards(items, records.count if records else count)
        if self.folder is not None and records is None:
            atomic_write_json(self.folder / SHARDS_INDEX, _index_payload(cfg, items, count))

    def _save_record(self, i: int) -> None:
        if self.folder is None:
            return
        record = {"format": RECORD_FORMAT, "outcome": self.outcomes[i], "attempts": self.attempts[i],
                  "retried": self.retried.get(i, [])}
        atomic_write_bytes(self.folder / SHARDS_DIR / f"{i}.pkl", pickle.dumps(record, protocol=4))

    # -- the run -------------------------------------------------------------------------------
    def run(self, *, t0: float, startup_s: float) -> Report:
        ray = self.ray
        # max_retries=0: the driver resubmits lost shards itself, so it knows every attempt
        task, options = ray.remote(_run_shard), dict(max_retries=0, retry_exceptions=False,
                                                     **_task_resources(self.cfg))
        pending: dict[Any, int] = {}
        bar = self._progress_bar()

        def submit(i: int) -> None:
            self.attempts[i] = self.attempts.get(i, 0) + 1
            pending[task.options(name=f"e3d-shard-{i}", **options).remote(self.cfg, i, len(self.plans))] = i

        try:
            for p in self.plans:
                if p.index not in self.outcomes:
                    submit(p.index)
            while pending:
                if self.stop.signum is not None:
                    self._interrupt(pending, self.stop.signum)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                for ref in ready:
                    i = pending.pop(ref)
                    outcome = self._collect(ref, i, submit)
                    if outcome is not None:
                        self._check_storage(outcome)
                        self.outcomes[i] = outcome
                        self._save_record(i)
                        self._tick(bar, i, t0)
        except KeyboardInterrupt:   # a second Ctrl-C: stop now, no grace for the shards
            self._cancel(pending, grace_s=0.0)
            raise
        finally:
            if pending:  # a failed shard: stop the others
                self._cancel(pending)
            if bar is not None:
                bar.close()
        self.stop.commit()   # from here on the run finishes: signals are only recorded
        t_merge = time.perf_counter()
        report = self._merge(wall_s=time.perf_counter() - t0, startup_s=startup_s)
        report = dataclasses.replace(report, timings={**report.timings, "merge": time.perf_counter() - t_merge})
        if self.folder is not None:
            write_outputs(report, self.folder)  # val.json, then result.json: the commit point
            _remove_records(self.folder)
        return report

    def _collect(self, ref: Any, i: int, submit: Callable[[int], None]) -> ShardOutcome | None:
        """The shard's outcome; None after resubmitting a lost one; raises for a failed one."""
        ray = self.ray
        exc = ray.exceptions
        plan = self.plans[i]
        try:
            return cast(ShardOutcome, ray.get(ref))   # what _run_shard returns
        except exc.RayTaskError as err:  # a Python exception inside the shard: fatal
            cause = getattr(err, "cause", None)
            if isinstance(cause, PipelineInterrupted) and self.stop.signum is not None:
                return None  # the signal reached the shard too (a terminal's Ctrl-C): the loop stops next
            where = plan.where() + (f" on node {err.ip}" if getattr(err, "ip", None) else "")
            if isinstance(cause, E3DError):
                raise _in_shard(cause, where) from err
            raise WorkerError(f"{where} failed: {type(cause).__name__ if cause else 'error'}: {cause}",
                              remote_traceback=getattr(err, "traceback_str", None)) from err
        except (exc.TaskCancelledError, exc.TaskUnschedulableError, exc.RuntimeEnvSetupError) as err:
            if isinstance(err, exc.TaskCancelledError) and self.stop.signum is not None:
                return None
            raise WorkerError(f"{plan.where()} could not run: {err}") from err
        except exc.RayError as err:  # the worker process or its node died, or the result was lost
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            self.retried.setdefault(i, []).append(reason)
            if self.stop.signum is not None:
                return None
            if self.attempts[i] > MAX_RETRIES:
                raise WorkerError(f"{plan.where()} failed {self.attempts[i]} times; last: {reason}") from err
            submit(i)
            return None

    def _check_storage(self, outcome: ShardOutcome) -> None:
        """A video this host finds but the shard's node reported missing: the storage is not shared."""
        lost = [f.video_id for f in outcome.report.failures
                if f.reason == MISSING and f.video_id in self.found_here]
        if lost:
            raise ConfigError(f"{self.plans[outcome.index].where()}: node {outcome.node_ip} found no file for "
                              f"{lost[:3]} although {self.cfg.data.video_path} holds them here; videos must be at "
                              f"the same path on every node (shared storage)")

    def _cancel(self, pending: dict[Any, int], *, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop the running shards: interrupt them, then force-cancel the ones still running.

        The interrupt (a KeyboardInterrupt in the task) lets a shard's pipeline
        close as it does on Ctrl-C, so its decode workers and shared-memory ring
        go with it; ``force=True`` kills the Ray worker, and Ray kills the
        worker's children too (the ring's resource tracker among them).
        """
        ray, refs = self.ray, list(pending)
        pending.clear()
        if not refs:
            return
        for force, grace in ((False, grace_s), (True, 5.0)):
            if grace <= 0:
                continue
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=force)
            with contextlib.suppress(Exception):
                _, refs = ray.wait(refs, num_returns=len(refs), timeout=grace)
            if not refs:
                return

    def _interrupt(self, pending: dict[Any, int], signum: int) -> None:
        self._cancel(pending)
        name = signal.Signals(signum).name
        done = len(self.outcomes)
        if self.folder is not None:
            msg = (f"stopped by {name}; state saved in {self.folder} ({done} of {len(self.plans)} shards "
                   f"finished); run again with --resume to run the other {len(self.plans) - done}")
        else:
            msg = f"stopped by {name}; nothing was saved (no output folder): a new run starts from the beginning"
        raise PipelineInterrupted(msg, signum=signum)

    # -- merge ---------------------------------------------------------------------------------
    def _merge(self, *, wall_s: float, startup_s: float) -> Report:
        """One Report equal to a single-host run's: results in dataset order, accuracy over every item.

        What depends on the whole list is recomputed exactly as ``build_report``
        does; what every shard computes alike (labels, preprocessing, session,
        versions) is taken from shard 0.
        """
        cfg, items = self.cfg, self.items
        ordered = [self.outcomes[p.index].report for p in self.plans]
        results: dict[str, Any] = {}
        for r in ordered:
            results.update(r.results)
        index_of = {it.video_id: n for n, it in enumerate(items)}
        # each shard lists its ledger in stream (= dataset) order; sorting stably by video keeps that
        failures = sorted((f for r in ordered for f in r.failures), key=lambda f: index_of.get(f.video_id, -1))
        truth = {it.video_id: it.label_index for it in items}
        k5 = min(5, min(cfg.output.topk, len(self.annotation.labels)))   # as build_report: the accumulator's top-k
        accuracy = video_accuracy(results, truth, topk=(1, k5))
        clips = clip_accuracy(results)
        n_clips = sum(r.n_clips for r in ordered)
        shard_s = sum(self.outcomes[p.index].seconds for p in self.plans)
        timings = {"wall": wall_s}
        for r in ordered:   # busy and waiting times: summed over shards
            for key, value in r.timings.items():
                if key != "wall" and isinstance(value, (int, float)):
                    timings[key] = timings.get(key, 0.0) + value
        timings.update(ray_startup=startup_s, shards_total=shard_s)
        throughput = _merge_throughput(ordered, n_clips=n_clips, wall_s=wall_s, shard_s=shard_s,
                                       device_busy=timings.get("device_busy", 0.0))
        throughput.update(engine="ray", nodes=len({o.node_id for o in self.outcomes.values()}),
                          shards=[self._shard_entry(p) for p in self.plans])
        notes: tuple[str, ...] = ()
        if self.resumed:
            notes = (f"{len(self.resumed)} of {len(self.plans)} shards came from the records of the interrupted "
                     f"run in {self.folder}",)
        return dataclasses.replace(
            ordered[0],
            top1=accuracy.accuracy(1), top5=accuracy.accuracy(k5),
            hits={"1": accuracy.hits[1], "5": accuracy.hits[k5]}, top5_k=k5,
            n_videos=len(items), n_scored=len(results), n_clips=n_clips,
            clip_top1=clips.top1 if clips.total else None, failures=tuple(failures), results=results,
            truth=truth, per_class=per_class_summary(results, truth, self.annotation.labels),
            dropped_clips=sum(r.dropped_clips for r in ordered), timings=timings, throughput=throughput,
            config=cfg.to_dict(), versions={**versions(), **ordered[0].versions, "ray": self.ray.__version__},
            notes=notes)

    def _shard_entry(self, p: ShardPlan) -> dict[str, Any]:
        o = self.outcomes[p.index]
        return {"index": p.index, "videos": p.videos, "first": p.first, "last": p.last, "clips": o.n_clips,
                "node_id": o.node_id, "node_ip": o.node_ip, "attempts": self.attempts.get(p.index, 1),
                "retried_after": list(self.retried.get(p.index, [])), "seconds": o.seconds,
                "device_busy_s": float(o.report.timings.get("device_busy", 0.0)),
                "resumed": p.index in self.resumed}

    # -- progress ------------------------------------------------------------------------------
    def _progress_bar(self) -> tqdm[Any] | None:
        if not self.cfg.output.progress:
            return None
        from tqdm import tqdm

        done = sum(self.plans[i].videos for i in self.outcomes)
        return tqdm(total=len(self.items), initial=done, unit="video", dynamic_ncols=True)

    def _tick(self, bar: tqdm[Any] | None, i: int, t0: float) -> None:
        if bar is None:
            return
        bar.update(self.plans[i].videos)
        clips = sum(o.n_clips for k, o in self.outcomes.items() if k not in self.resumed)
        bar.set_postfix(clips_s=f"{clips / max(time.perf_counter() - t0, 1e-9):.1f}",
                        shards=f"{len(self.outcomes)}/{len(self.plans)}", refresh=True)


#: throughput entries recomputed for the whole run rather than combined from the shards
_RECOMPUTED = ("end_to_end_clips_per_s", "compute_clips_per_s", "mean_compute_ms", "device_busy_fraction",
               "running_clips_per_s", "running_process_cpu_us_per_clip",    # per process: not merged
               "running_device_busy_fraction")
#: per-shard settings: the same in every shard, kept as they are
_SETTINGS = ("batch_size", "devices", "input_dtype")


def _merge_throughput(reports: Sequence[Report], *, n_clips: int, wall_s: float, shard_s: float,
                      device_busy: float) -> dict[str, Any]:
    """The shards' throughput entries combined: peaks -> max, counters -> sum, settings -> shard 0's."""
    out: dict[str, Any] = {}
    for r in reports:
        for key, value in r.throughput.items():
            if key in _RECOMPUTED:
                continue
            if key not in out or key in _SETTINGS or not isinstance(value, (int, float)) or isinstance(value, bool):
                out.setdefault(key, value)
            elif key.startswith("peak_"):
                out[key] = max(out[key], value)
            else:
                out[key] += value
    with_clips = [r for r in reports if r.n_clips and r.throughput.get("mean_compute_ms")]
    mean_ms = (sum(r.throughput["mean_compute_ms"] * r.n_clips for r in with_clips)
               / sum(r.n_clips for r in with_clips)) if with_clips else 0.0
    batch, devices = out.get("batch_size") or 0, out.get("devices") or 1
    out.update({
        "end_to_end_clips_per_s": n_clips / wall_s if wall_s > 0 else 0.0,
        # the seed's figure for one shard's devices (1000 * B / mean ms each), as a single host reports it
        "compute_clips_per_s": devices * 1000.0 * batch / mean_ms if mean_ms > 0 else 0.0,
        "mean_compute_ms": mean_ms,
        # of the time the shards ran, the fraction their devices computed
        "device_busy_fraction": device_busy / shard_s if shard_s > 0 else 0.0,
    })
    return out


def _in_shard(exc: E3DError, where: str) -> E3DError:
    """The shard's own error (same type and attributes), its message prefixed with where it happened."""
    try:
        new = copy.copy(exc)
    except Exception:  # an exception type that cannot be rebuilt: keep it as it is
        return exc
    if isinstance(new, OSError) and new.strerror:
        new.strerror = f"{where}: {new.strerror}"
    elif new.args and isinstance(new.args[0], str):
        new.args = (f"{where}: {new.args[0]}", *new.args[1:])
    return new


# -- the output folder -------------------------------------------------------------------------------

def _prepare_ray_output(cfg: EvalConfig, annotation: Annotation) -> Report | None:
    """:func:`~e3d_stream.run._evaluate._prepare_output` for a folder that may also hold shard records.

    A completed folder + resume returns the saved report; resume of shard
    records continues them; a fresh run into a folder with results, a
    checkpoint or shard records is refused unless ``overwrite`` (which removes them).
    """
    assert cfg.output.output is not None  # called only for a run with an output folder
    folder = Path(cfg.output.output)
    has_records = (folder / SHARDS_INDEX).is_file()
    if cfg.output.resume:
        if (folder / RESULT_NAME).is_file():
            done = _prepare_output(cfg, annotation)
            _remove_records(folder)   # stale ones from a crash between commit and cleanup
            return done
        if has_records:
            return None
        if (folder / CHECKPOINT_NAME).is_file():
            raise ConfigError(f"{folder} holds the checkpoint of an interrupted engine='local' run: resume it "
                              f"with --engine local")
        return _prepare_output(cfg, annotation)   # raises "nothing to resume"
    if has_records and not cfg.output.overwrite:
        raise ConfigError(f"{folder} holds the shard records of an interrupted engine='ray' run; continue it with "
                          f"--resume, or pass --overwrite (overwrite=True) to replace it, or choose another "
                          f"output folder")
    _prepare_output(cfg, annotation)
    _remove_records(folder)
    return None


def _remove_records(folder: Path) -> None:
    """Delete the shard records (after the results are committed, or on overwrite)."""
    shutil.rmtree(folder / SHARDS_DIR, ignore_errors=True)
    (folder / SHARDS_INDEX).unlink(missing_ok=True)


__all__ = ["MAX_RETRIES", "ShardOutcome", "ShardPlan", "evaluate_ray", "plan_shards"]
