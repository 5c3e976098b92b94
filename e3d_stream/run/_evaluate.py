"""``evaluate(config) -> Report``: the wiring of one streaming pass, and its shutdown.

    list_videos ─► ClipPool (decode workers, shared-memory ring, dataset order)
                      │ ClipEvent / VideoEnd / VideoFailed
                      ▼
                  BatchAssembler (mean subtraction into a staging buffer)
                      │ full batch (+ optional seed-layout .bin dump)
                      ▼
                  DoubleBuffer (upload k+1 while k computes) ─► logits
                      ▼
                  TopKAccumulator ─► Report (result.json, val.json, ledger)

Nothing here decodes, computes or scores; it connects the pieces, keeps the
failure ledger, saves checkpoints at batch boundaries and makes sure every
process and shared-memory segment is gone when it returns or raises.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ledger
from ..errors import ConfigError, DecodeError, PipelineInterrupted
from ..scoring._accumulator import TopKAccumulator
from ..sessions._runner import DeviceRunner
from ..stream._loader import Batch, ClipLoader, Position
from ..stream._pool import VideoEnd, VideoFailed
from ..video._clips import SOURCES
from ..video._dataset import list_videos, load_annotation, shard
from ..video._decode import DecodeLimits
from ..video._transforms import normalize_into
from ._config import _UINT8_NORM, EvalConfig
from ._report import RESULT_NAME, VAL_NAME, Report, build_report, load_report, per_class_summary, write_outputs
from ._state import (
    CHECKPOINT_NAME,
    COMPLETE,
    EMPTY,
    RunState,
    check_fingerprint,
    folder_status,
    remove_checkpoint,
)

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..seed._binio import BinWriter
    from ..sessions._base import Session
    from ..video._dataset import Annotation, VideoItem

DEFAULT_BATCH = 16


@dataclass
class _Progress:
    """Counters the progress bar and the report read."""

    clips: int = 0
    t0: float = field(default_factory=time.perf_counter)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the main loop stops at the next event.

    Once the run starts committing its results (:meth:`commit`), a signal is only
    recorded: finishing is one step, and a run whose result.json is written is
    complete whatever arrives while its workers shut down. Before that, a second
    SIGINT stops at once (KeyboardInterrupt).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.late_signum: int | None = None
        self.committing = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.committing:
            self.late_signum = signum
            return
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop right away
        self.signum = signum

    def commit(self) -> None:
        """From now on signals are deferred: the run is finishing."""
        self.committing = True
        if self.signum is not None:  # came after the loop's last check: the run completes anyway
            self.late_signum = self.signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def evaluate(config: EvalConfig | None = None, /, *, session: Session | None = None, **kwargs: Any) -> Report:
    """Evaluate a model on a video set in one streaming pass.

    Pass an :class:`EvalConfig` or its fields as keywords, e.g.
    ``evaluate(video_path=..., annotation_path=..., model="m.onnx")``. An open
    :class:`~e3d_stream.sessions.Session` may be given instead of loading
    ``model``. Returns a :class:`Report`; with ``output`` set, result.json and
    val.json are written there. Raises :class:`PipelineInterrupted` after
    saving a checkpoint when SIGINT/SIGTERM stops the run.
    """
    if session is not None and config is None and kwargs.get("model") is None:
        # the session is the model: result.json names what ran (its file, else the backend)
        kwargs["model"] = session.model_path or f"<open {session.backend} session>"
    cfg = config if config is not None else EvalConfig.create(**kwargs)
    if config is not None and kwargs:
        cfg = cfg.replace(**kwargs)
    cfg.check_paths()
    data = cfg.data
    annotation = load_annotation(data.annotation_path)
    items = list_videos(annotation, data.video_path, subset=data.subset, source=SOURCES[data.source].layout,
                        dataset=data.dataset)
    if data.limit is not None:
        items = items[: data.limit]
    if data.shard is not None:
        items = shard(items, *data.shard)
    if cfg.engine.engine == "ray":
        if session is not None:
            raise ConfigError("engine='ray' opens one session per shard on the cluster: pass a model, not a session")
        from ._ray import evaluate_ray

        report = evaluate_ray(cfg)
    else:
        report = _evaluate_local(cfg, annotation, items, session)
    truth = {it.video_id: it.label_index for it in items}
    if not report.per_class:
        report = dataclasses.replace(report, per_class=per_class_summary(report.results, truth, annotation.labels))
    if cfg.output.report:
        from ._html import write_report

        paths = write_report(cfg.output.report, report.to_dict(), report.results, truth, annotation.labels)
        report = dataclasses.replace(report, notes=(*report.notes, f"report: {paths['html']}"))
    return report


def _evaluate_local(cfg: EvalConfig, annotation: Annotation, items: list[VideoItem], session: Session | None
                    ) -> Report:
    """One host: decode pool, session, accumulator; the output folder's protocol."""
    if cfg.output.output:
        done = _prepare_output(cfg, annotation)
        if done is not None:
            return done
    # The flag outlives the ExitStack: a signal while workers and the session shut
    # down after the results are written must not turn a complete run into an error.
    with _StopFlag() as stop, ExitStack() as stack:
        sessions = [session] if session is not None else _open_sessions(cfg, annotation, stack)
        report = _Run(cfg, annotation, items, sessions, stack, stop).execute()
    if stop.late_signum is not None:
        name = signal.Signals(stop.late_signum).name
        report = dataclasses.replace(report, notes=(*report.notes, f"{name} arrived after the results were "
                                                    f"written: the run is complete"))
    return report


def _open_sessions(cfg: EvalConfig, annotation: Annotation, stack: ExitStack) -> list[Session]:
    """One session per device of ``--device`` (a comma-separated list), all of one model."""
    from ..sessions import open_session, split_devices

    m = cfg.model
    options = dict(m.arch_options, **m.session_options)
    if m.backend == "simulated":
        options.setdefault("num_classes", len(annotation.labels))
    sessions = [stack.enter_context(open_session(m.model, backend=m.backend, device=device,
                                                 batch_size=m.batch_size, threads=m.threads, **options))
                for device in split_devices(m.device)]
    kinds = {(s.input_dtype, s.fixed_batch, s.num_classes) for s in sessions}
    if len(kinds) > 1:
        raise ConfigError(f"the sessions of {m.device} disagree on input dtype / static batch / classes: {kinds}")
    return sessions


def _prepare_output(cfg: EvalConfig, annotation: Annotation) -> Report | None:
    """Decide what the output folder's earlier contents mean for this run.

    Returns the saved :class:`Report` when ``resume`` finds the run complete
    (nothing is recomputed); raises a :class:`ConfigError` for a resume with
    nothing to resume, and for a fresh run into a folder that holds another
    run's results or checkpoint unless ``overwrite`` (which removes them first,
    so stale results never sit beside a new checkpoint).
    """
    out = cfg.output
    assert out.output is not None  # called only for a run with an output folder
    folder = Path(out.output)
    status = folder_status(folder, result_name=RESULT_NAME)
    if out.resume:
        if status == EMPTY:
            raise ConfigError(f"nothing to resume in {folder}: it holds neither a checkpoint nor results "
                              f"(run without --resume to start)")
        if status == COMPLETE:
            saved = load_report(folder, annotation.labels)
            check_fingerprint(EvalConfig.create(**saved.config).fingerprint(), cfg.fingerprint(), folder)
            remove_checkpoint(folder)  # a stale one from a crash between commit and cleanup
            return dataclasses.replace(saved, notes=(f"the run in {folder} is already complete; "
                                                     f"nothing was recomputed",))
        return None
    if status != EMPTY and not out.overwrite:
        what = "the results of a completed run" if status == COMPLETE else "the checkpoint of an interrupted run"
        hint = "" if status == COMPLETE else "continue it with --resume, or "
        raise ConfigError(f"{folder} holds {what}; {hint}pass --overwrite (overwrite=True) to replace it, "
                          f"or choose another output folder")
    for name in (RESULT_NAME, VAL_NAME, CHECKPOINT_NAME):
        (folder / name).unlink(missing_ok=True)
    return None


class _Run:
    """One evaluation: state shared by the event handlers below."""

    def __init__(self, cfg: EvalConfig, annotation: Annotation, items: list[VideoItem], sessions: list[Session],
                 stack: ExitStack, stop: _StopFlag) -> None:
        self.cfg, self.annotation, self.items, self.sessions = cfg, annotation, items, sessions
        self.session = sessions[0]
        self.stop = stop
        self.batch_size = self.session.fixed_batch or cfg.model.batch_size or DEFAULT_BATCH
        num_classes = self.session.num_classes or len(annotation.labels)
        if num_classes != len(annotation.labels):
            raise ConfigError(f"the model has {num_classes} classes but the annotation lists "
                              f"{len(annotation.labels)} labels")
        if self.session.input_dtype != "float32" and not cfg.test.normalization().is_default:
            raise ConfigError(f"{_UINT8_NORM} (this {self.session.backend} session takes {self.session.input_dtype})")
        self.acc = TopKAccumulator(num_classes, labels=annotation.labels, topk=min(cfg.output.topk, num_classes),
                                   compat=cfg.output.compat or "none",
                                   softmax="none" if cfg.test.no_softmax_in_test else "numpy")
        self.failures: list[ledger.Failure] = []
        self.failed_ids: set[str] = set()
        self.position = Position()
        self.last_batch: Batch | None = None
        self.peak_open = 0
        # (time, clips scored, this process's CPU seconds, device busy seconds) at the first and
        # at the latest scored batch
        self.scored_at: list[tuple[float, int, float, float]] = []
        self.progress = _Progress()
        self.stack = stack
        self.elapsed_before = 0.0
        self.last_save = time.perf_counter()
        self.bins: BinWriter | None = None
        if cfg.output.resume:
            self._restore()

    # -- resume ------------------------------------------------------------------------
    def _restore(self) -> None:
        assert self.cfg.output.output is not None  # EvalConfig: resume needs the output folder
        state = RunState.load(self.cfg.output.output, fingerprint=self.cfg.fingerprint())
        if state is None:  # _prepare_output let an interrupted folder through: the checkpoint is there
            raise ConfigError(f"the checkpoint in {self.cfg.output.output} disappeared")
        self.position = state.position
        if state.accumulator is not None:
            self.acc = TopKAccumulator.from_state(state.accumulator)
        self.failures = list(state.failures)
        self.failed_ids = set(state.dropped_videos)
        self.elapsed_before = state.elapsed_s

    def _save(self, position: Position) -> None:
        if not self.cfg.output.output:
            return
        first_pending = {it.video_id for it in self.items[position.video_index:]}
        RunState(
            fingerprint=self.cfg.fingerprint(),
            position=position,
            accumulator=self.acc.state_dict(),
            # failures of videos the resumed run will decode again are recorded again
            failures=[f for f in self.failures if f.video_id not in first_pending],
            dropped_videos=sorted(self.failed_ids - first_pending),
            elapsed_s=self.elapsed_before + time.perf_counter() - self.progress.t0,
        ).save(self.cfg.output.output)
        self.last_save = time.perf_counter()

    # -- the run -----------------------------------------------------------------------
    def execute(self) -> Report:
        cfg, out = self.cfg, self.cfg.output
        depth = 2   # batches in flight per device: upload k+1 while k computes
        runner = self.stack.enter_context(closing(DeviceRunner(self.sessions, depth=depth)))
        self.runner = runner
        if out.dump_bins:
            from ..seed._binio import BinWriter

            assert out.info_path is not None  # EvalConfig: dump_bins and info_path go together
            self.bins = BinWriter(out.dump_bins, out.info_path, batch_size=self.batch_size, tail=out.bins_tail)
        d = cfg.decode
        loader = ClipLoader(
            self.items, batch_size=self.batch_size, dtype=self.session.input_dtype, workers=cfg.pool.workers,
            backlog=max(1, cfg.pool.queue_depth // cfg.pool.workers), buffers=depth * len(self.sessions) + 2,
            source=cfg.data.source, resize=d.resize, policy=d.policy, decode_threads=d.decode_threads,
            limits=DecodeLimits(max_frames=d.max_frames, max_pixels=d.max_pixels),
            start_method=cfg.pool.start_method, video_timeout=d.video_timeout,
            drop_last=out.compat == "modelzoo", producer=cfg.producer, producer_options=cfg.producer_options,
            geometry=cfg.test.geometry(), normalization=cfg.test.normalization(), downsample=cfg.test.downsample,
            views=cfg.test.view_protocol())
        self.loader = self.stack.enter_context(loader)
        loader.load_state_dict({"video_index": self.position.video_index, "clips_done": self.position.clips_done,
                                "stream_clips": self.position.stream_clips})
        bar = self._progress_bar(len(self.items))
        stop = self.stop
        for ev in loader.events(should_stop=lambda: stop.signum is not None, on_idle=self._drain):
            if isinstance(ev, Batch):
                self._submit(ev)
                continue
            vid = ev.item.video_id
            if isinstance(ev, VideoEnd):
                if ev.warning is not None:
                    self._record(ev.warning)
                if ev.n_clips == 0:
                    self._record(ledger.no_clips(vid, ev.n_frames))
                else:
                    self.acc.expect(vid, ev.n_clips, label_index=ev.item.label_index)
            elif isinstance(ev, VideoFailed):
                if vid in self.failed_ids:
                    continue   # ledgered by the interrupted run already
                self._record(ev.failure)
                if ev.n_clips_yielded:
                    self.failed_ids.add(vid)
                    self.acc.discard(vid)
            self._tick(bar)
            if stop.signum is not None:
                break
        if stop.signum is not None:
            self._interrupt(stop.signum)
        # From here on the run finishes: signals are deferred until the results are committed.
        stop.commit()
        self._finish_runner()
        if bar is not None:
            bar.close()
        wall = self.elapsed_before + time.perf_counter() - self.progress.t0
        report = build_report(self.cfg, self.annotation, self.items, self.acc, self.failures,
                              session=self.session, pool_stats=loader.pool.stats, runner=runner,
                              batch_size=self.batch_size, n_clips=loader.position.stream_clips,
                              dropped_clips=len(loader.dropped), wall_s=wall, peak_open_videos=self.peak_open,
                              scored_at=self.scored_at)
        if len(self.sessions) > 1:
            report = dataclasses.replace(report, session={**report.session,
                                                          "devices": [s.device for s in self.sessions],
                                                          "per_device": [s.describe() for s in self.sessions]})
        if self.bins is not None:
            self.bins.close()
        if out.output:
            write_outputs(report, out.output)     # val.json, then result.json: the commit point
            remove_checkpoint(out.output)
        return report

    def _submit(self, batch: Batch) -> None:
        """Hand a ring batch to a device: pad a short last batch in place, dump it if asked, submit."""
        assert batch.full is not None
        n = batch.n_valid
        if n < len(batch.full):
            batch.full[n:] = batch.full[n - 1]   # copies of the last clip: ordinary logits, never scored
        if self.bins is not None:
            self._dump(batch)
        self.runner.submit(batch.full, n, batch)
        self._drain()

    def _drain(self) -> None:
        """Score finished batches (in order) and give free buffers back to the ring."""
        results, freed = self.runner.poll()
        for batch in freed:
            self.loader.release(batch)
        self._consume(results)

    def _finish_runner(self) -> None:
        results, freed = self.runner.finish()
        for batch in freed:
            self.loader.release(batch)
        self._consume(results)

    # -- event handlers ----------------------------------------------------------------
    def _record(self, failure: ledger.Failure) -> None:
        if self.cfg.output.strict:
            raise DecodeError(f"{failure.video_id}: {failure.reason}: {failure.detail} (--strict)",
                              reason=failure.reason)
        self.failures.append(failure)

    def _consume(self, results: list[tuple[Batch, Any]]) -> None:
        failed = self.failed_ids
        for batch, logits in results:
            tags = batch.tags
            scored, rows = tags, logits[:len(tags)]   # the usual batch: every row, no gathering
            if failed and any(t.video_id in failed for t in tags):
                keep = [i for i, t in enumerate(tags) if t.video_id not in failed]
                scored, rows = tuple(tags[i] for i in keep), logits[keep]
            if scored:
                self.acc.add([t.video_id for t in scored], rows, clip_indices=[t.clip_index for t in scored])
            self.peak_open = max(self.peak_open, self.acc.n_open)
            self.progress.clips += batch.n_valid
            mark = (time.perf_counter(), self.progress.clips, time.process_time(), sum(self.runner.busy_s))
            if len(self.scored_at) < 2:
                self.scored_at.append(mark)
            else:
                self.scored_at[1] = mark
            self.last_batch = batch
            out = self.cfg.output
            if out.output and time.perf_counter() - self.last_save > out.checkpoint_every:
                self._save(Position.after(tags[-1]))

    def _dump(self, batch: Batch) -> None:
        assert self.bins is not None and batch.full is not None
        data = batch.full
        if data.dtype == np.uint8:   # bins are the seed's float32 inputs
            data = normalize_into(np.empty(data.shape, np.float32), data)
        self.bins.add(data, batch.video_ids, batch.n_valid)

    def _interrupt(self, signum: int) -> None:
        """Finish the batches in flight, forget the rest, save, raise."""
        self._finish_runner()
        self._save(Position.after(self.last_batch.tags[-1]) if self.last_batch is not None else self.position)
        name = signal.Signals(signum).name
        folder = self.cfg.output.output
        if folder:
            msg = f"stopped by {name}; state saved in {folder}; run again with --resume to continue"
        else:
            msg = f"stopped by {name}; nothing was saved (no output folder): a new run starts from the beginning"
        raise PipelineInterrupted(msg, signum=signum)

    def _progress_bar(self, total: int) -> tqdm[Any] | None:
        if not self.cfg.output.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=self.position.video_index, unit="video", dynamic_ncols=True)

    def _tick(self, bar: tqdm[Any] | None) -> None:
        if bar is not None:
            bar.update(1)
            elapsed = time.perf_counter() - self.progress.t0
            pool = self.loader.pool
            bar.set_postfix(clips_s=f"{self.progress.clips / max(elapsed, 1e-9):.1f}",
                            ring=f"{pool.buffers_in_use}/{pool.ring.n_buffers}", refresh=False)
