"""What runs inside a decode worker process (the parent side is :mod:`e3d_stream.stream._pool`).

The worker loops: receive a task (a video path) on its pipe, run the producer
over it, and for each clip ask the parent for a ring slot, write the clip into
that slot of the shared memory and report it. Only slot numbers and small
records cross the pipe. It imports no device runtime, ignores SIGINT (the
parent owns shutdown) and exits when its parent dies.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
import traceback
from multiprocessing import shared_memory

import numpy as np

from .. import ledger
from ..constants import CLIP_SHAPE
from ..errors import DecodeError

CLIP_BYTES = int(np.prod(CLIP_SHAPE))
_POLL_S = 0.05


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - non-Linux: the ppid check below still applies
        pass


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def worker_main(conn, shm_name: str, n_slots: int, parent_pid: int, producer: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # Attaching registers the name with the resource tracker that this child
    # shares with its parent (a set: a no-op); the parent unlinks it at close().
    shm = shared_memory.SharedMemory(name=shm_name)
    ring = np.ndarray((n_slots, *CLIP_SHAPE), dtype=np.uint8, buffer=shm.buf)
    produce = _resolve(producer)

    def recv():
        while not conn.poll(_POLL_S):
            if os.getppid() != parent_pid:
                raise SystemExit(0)
        return conn.recv()

    try:
        while True:
            msg = recv()
            if msg[0] == "stop":
                return
            _, task, path, options = msg
            t0 = time.perf_counter()
            waited = 0.0
            try:
                stream = produce(path, **options)
                n = 0
                for clip in stream:
                    tw = time.perf_counter()
                    conn.send(("need", task))
                    reply = recv()
                    if reply[0] == "stop":
                        return
                    slot = reply[1]
                    waited += time.perf_counter() - tw
                    ring[slot] = clip
                    conn.send(("clip", task, n, slot))
                    n += 1
                warning = getattr(stream, "warning", None)
                conn.send(("done", task, int(getattr(stream, "n_frames", -1)), n, warning,
                           time.perf_counter() - t0 - waited, waited))
            except DecodeError as exc:
                conn.send(("error", task, exc.reason, str(exc), None, exc.n_frames))
            except Exception as exc:  # any other producer failure: ledgered, traceback kept
                conn.send(("error", task, ledger.DECODE_ERROR, f"{type(exc).__name__}: {exc}",
                           traceback.format_exc(), None))
    finally:
        del ring
        shm.close()
