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
from typing import Any

from .. import ledger
from ..errors import ConfigError, DecodeError, PipelineInterrupted
from ..scoring._accumulator import TopKAccumulator
from ..stream._batching import BatchAssembler, BatchMeta, ClipTag
from ..stream._pool import ClipEvent, ClipPool, PoolConfig, VideoEnd, VideoFailed
from ..video._clips import SOURCES
from ..video._dataset import list_videos, load_annotation, shard
from ..video._transforms import warm_up
from ._config import EvalConfig
from ._report import RESULT_NAME, VAL_NAME, Report, build_report, load_report, per_class_summary, write_outputs
from ._state import (
    CHECKPOINT_NAME,
    COMPLETE,
    EMPTY,
    Position,
    RunState,
    check_fingerprint,
    folder_status,
    remove_checkpoint,
)

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

    def _handle(self, signum, frame) -> None:
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

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def evaluate(config: EvalConfig | None = None, /, *, session=None, **kwargs) -> Report:
    """Evaluate a model on a video set in one streaming pass.

    Pass an :class:`EvalConfig` or its fields as keywords, e.g.
    ``evaluate(video_path=..., annotation_path=..., model="m.onnx")``. An open
    :class:`~e3d_stream.sessions.Session` may be given instead of loading
    ``model``. Returns a :class:`Report`; with ``output`` set, result.json and
    val.json are written there. Raises :class:`PipelineInterrupted` after
    saving a checkpoint when SIGINT/SIGTERM stops the run.
    """
    cfg = config if config is not None else EvalConfig.create(**kwargs)
    if config is not None and kwargs:
        cfg = cfg.replace(**kwargs)
    cfg.check_paths()
    data = cfg.data
    annotation = load_annotation(data.annotation_path)
    items = list_videos(annotation, data.video_path, subset=data.subset, source=SOURCES[data.source].layout)
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


def _evaluate_local(cfg: EvalConfig, annotation, items, session) -> Report:
    """One host: decode pool, session, accumulator; the output folder's protocol."""
    if cfg.output.output:
        done = _prepare_output(cfg, annotation)
        if done is not None:
            return done
    # The flag outlives the ExitStack: a signal while workers and the session shut
    # down after the results are written must not turn a complete run into an error.
    with _StopFlag() as stop, ExitStack() as stack:
        if session is None:
            from ..sessions import open_session

            m = cfg.model
            options = dict(m.arch_options, **m.session_options)
            if m.backend == "simulated":
                options.setdefault("num_classes", len(annotation.labels))
            session = stack.enter_context(open_session(
                m.model, backend=m.backend, device=m.device, batch_size=m.batch_size,
                threads=m.threads, **options))
        report = _Run(cfg, annotation, items, session, stack, stop).execute()
    if stop.late_signum is not None:
        name = signal.Signals(stop.late_signum).name
        report = dataclasses.replace(report, notes=(*report.notes, f"{name} arrived after the results were "
                                                    f"written: the run is complete"))
    return report


def _prepare_output(cfg: EvalConfig, annotation) -> Report | None:
    """Decide what the output folder's earlier contents mean for this run.

    Returns the saved :class:`Report` when ``resume`` finds the run complete
    (nothing is recomputed); raises a :class:`ConfigError` for a resume with
    nothing to resume, and for a fresh run into a folder that holds another
    run's results or checkpoint unless ``overwrite`` (which removes them first,
    so stale results never sit beside a new checkpoint).
    """
    out = cfg.output
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

    def __init__(self, cfg: EvalConfig, annotation, items, session, stack: ExitStack, stop: _StopFlag) -> None:
        self.cfg, self.annotation, self.items, self.session = cfg, annotation, items, session
        self.stop = stop
        self.batch_size = session.fixed_batch or cfg.model.batch_size or DEFAULT_BATCH
        num_classes = session.num_classes or len(annotation.labels)
        if num_classes != len(annotation.labels):
            raise ConfigError(f"the model has {num_classes} classes but the annotation lists "
                              f"{len(annotation.labels)} labels")
        self.acc = TopKAccumulator(num_classes, labels=annotation.labels, topk=min(cfg.output.topk, num_classes),
                                   compat=cfg.output.compat or "none")
        self.failures: list[ledger.Failure] = []
        self.failed_ids: set[str] = set()
        self.position = Position()
        self.last_meta: BatchMeta | None = None
        self.peak_open = 0
        self.progress = _Progress()
        self.stack = stack
        self.elapsed_before = 0.0
        self.last_save = time.perf_counter()
        self.bins = None
        if cfg.output.resume:
            self._restore()

    # -- resume ------------------------------------------------------------------------
    def _restore(self) -> None:
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
        from ..sessions import DoubleBuffer

        cfg = self.cfg
        start = self.position.video_index
        todo = []
        for index in range(start, len(self.items)):
            item = self.items[index]
            if item.path is None:
                if item.video_id not in self.failed_ids:
                    self._record(item.failure())
                continue
            todo.append(item)
        runner = self.stack.enter_context(closing(DoubleBuffer(self.session, self.batch_size)))
        out = cfg.output
        if out.dump_bins:
            from ..seed._binio import BinWriter

            self.bins = BinWriter(out.dump_bins, out.info_path, batch_size=self.batch_size, tail=out.bins_tail)
        assembler = BatchAssembler(
            self.batch_size, acquire=runner.acquire,
            submit=lambda buf, meta: self._consume(runner.submit(buf, meta.n_valid, meta)),
            drop_last=out.compat == "modelzoo",
            on_batch=[self._dump] if self.bins else [])
        # compile (or load) the exact kernel once here, so no worker pays the JIT compile
        self.warm_up_s = warm_up(cfg.decode.resize)
        pool = self.stack.enter_context(ClipPool(PoolConfig(
            workers=cfg.pool.workers, queue_depth=cfg.pool.queue_depth, start_method=cfg.pool.start_method,
            video_timeout=cfg.decode.video_timeout, producer=cfg.producer,
            producer_options=self._producer_options())))
        self.pool = pool
        bar = self._progress_bar(len(self.items))
        stream_index = self.position.stream_clips
        index_of = {item.video_id: i for i, item in enumerate(self.items)}
        stop = self.stop
        for ev in pool.run(todo, should_stop=lambda: stop.signum is not None):
            vid = ev.item.video_id
            vindex = index_of[vid]
            if isinstance(ev, ClipEvent):
                if vindex == start and ev.clip_index < self.position.clips_done:
                    continue  # already in a saved batch (resume)
                if vid in self.failed_ids:
                    continue
                assembler.add(ev.data, ClipTag(vindex, vid, ev.clip_index, stream_index))
                stream_index += 1
            elif isinstance(ev, VideoEnd):
                if ev.warning is not None:
                    self._record(ev.warning)
                if ev.n_clips == 0:
                    self._record(ledger.no_clips(vid, ev.n_frames))
                else:
                    self.acc.expect(vid, ev.n_clips, label_index=ev.item.label_index)
                self._tick(bar)
            elif isinstance(ev, VideoFailed):
                self._record(ev.failure)
                if ev.n_clips_yielded:
                    self.failed_ids.add(vid)
                    self.acc.discard(vid)
                self._tick(bar)
            if stop.signum is not None:
                break
        if stop.signum is not None:
            self._interrupt(runner, assembler, stop.signum)
        # From here on the run finishes: signals are deferred until the results are committed.
        stop.commit()
        assembler.finish()
        self._consume(runner.finish())
        if bar is not None:
            bar.close()
        wall = self.elapsed_before + time.perf_counter() - self.progress.t0
        report = build_report(self.cfg, self.annotation, self.items, self.acc, self.failures,
                              session=self.session, pool_stats=pool.stats, runner=runner,
                              n_clips=assembler.n_clips + self.position.stream_clips,
                              dropped_clips=len(assembler.dropped), wall_s=wall, peak_open_videos=self.peak_open)
        if self.bins is not None:
            self.bins.close()
        if out.output:
            write_outputs(report, out.output)     # val.json, then result.json: the commit point
            remove_checkpoint(out.output)
        return report

    def _producer_options(self) -> dict:
        from ..video._decode import DecodeLimits

        cfg, d = self.cfg, self.cfg.decode
        limits = DecodeLimits(max_frames=d.max_frames, max_pixels=d.max_pixels)
        return dict(source=cfg.data.source, policy=d.policy, resize=d.resize, threads=d.decode_threads,
                    limits=limits, **cfg.producer_options)

    # -- event handlers ----------------------------------------------------------------
    def _record(self, failure: ledger.Failure) -> None:
        if self.cfg.output.strict:
            raise DecodeError(f"{failure.video_id}: {failure.reason}: {failure.detail} (--strict)",
                              reason=failure.reason)
        self.failures.append(failure)

    def _consume(self, results: list[tuple[BatchMeta, Any]]) -> None:
        for meta, logits in results:
            keep = [i for i, t in enumerate(meta.tags) if t.video_id not in self.failed_ids]
            if keep:
                self.acc.add([meta.tags[i].video_id for i in keep], logits[keep],
                             clip_indices=[meta.tags[i].clip_index for i in keep])
            self.peak_open = max(self.peak_open, self.acc.n_open)
            self.progress.clips += meta.n_valid
            self.last_meta = meta
            out = self.cfg.output
            if out.output and time.perf_counter() - self.last_save > out.checkpoint_every:
                self._save(self._position_after(meta))

    def _position_after(self, meta: BatchMeta) -> Position:
        last = meta.tags[-1]
        return Position(video_index=last.video_index, clips_done=last.clip_index + 1,
                        stream_clips=last.stream_index + 1)

    def _dump(self, buf, meta: BatchMeta) -> None:
        self.bins.add(buf, [t.video_id for t in meta.tags], meta.n_valid)

    def _interrupt(self, runner, assembler: BatchAssembler, signum: int) -> None:
        """Finish the batches in flight, forget the unsubmitted rows, save, raise."""
        assembler.discard_pending()
        self._consume(runner.finish())
        if self.last_meta is not None:
            self._save(self._position_after(self.last_meta))
        else:
            self._save(self.position)
        name = signal.Signals(signum).name
        folder = self.cfg.output.output
        if folder:
            msg = f"stopped by {name}; state saved in {folder}; run again with --resume to continue"
        else:
            msg = f"stopped by {name}; nothing was saved (no output folder): a new run starts from the beginning"
        raise PipelineInterrupted(msg, signum=signum)

    def _progress_bar(self, total: int):
        if not self.cfg.output.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=self.position.video_index, unit="video", dynamic_ncols=True)

    def _tick(self, bar) -> None:
        if bar is not None:
            bar.update(1)
            elapsed = time.perf_counter() - self.progress.t0
            used = self.pool.slots_in_use
            bar.set_postfix(clips_s=f"{self.progress.clips / max(elapsed, 1e-9):.1f}",
                            queue=f"{used}/{self.cfg.pool.queue_depth}", refresh=False)
