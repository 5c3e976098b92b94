"""Synthetic test media with known content.

Each frame carries its 0-based frame number as an 8-bit block code inside the
region the reference centre crop keeps, so a wrong, repeated or shifted frame
is caught by reading the pixels back (``read_frame_number``), not only by a
wrong shape. Videos are encoded with PyAV, so tests need no ffmpeg CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

N_BITS = 8
# Block code geometry in 320x240 source coordinates (inside the 112x112 centre
# crop after the resize to 149x112 and the crop at x=18).
_BX0, _BW, _BY0, _BH = 80, 20, 90, 60


def numbered_frame(i: int, width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """An RGB frame whose pixels encode ``i`` (0..255) plus a smooth background."""
    yy, xx = np.mgrid[0:height, 0:width]
    rng_phase = (seed * 37) % 255
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (xx * 200 // max(width - 1, 1) + 3 * i + rng_phase) % 200 + 20
    img[..., 1] = (yy * 180 // max(height - 1, 1) + 5 * i) % 180 + 30
    img[..., 2] = (60 + 2 * i + seed * 11) % 160 + 40
    sx, sy = width / 320.0, height / 240.0
    y0, y1 = int(_BY0 * sy), int((_BY0 + _BH) * sy)
    for b in range(N_BITS):
        x0, x1 = int((_BX0 + b * _BW) * sx), int((_BX0 + (b + 1) * _BW) * sx)
        bit = (i >> (N_BITS - 1 - b)) & 1
        img[y0:y1, x0:x1] = 250 if bit else 5
    return img


def read_frame_number(img: np.ndarray, *, layout: str = "crop112") -> int:
    """Read the block code back.

    ``layout='crop112'``: ``img`` is a preprocessed (112, 112, 3) HWC frame (or
    (3, 112, 112) CHW) of a 320x240-proportioned source; ``'source'``: a full
    frame as written by :func:`numbered_frame`.
    """
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = np.transpose(img, (1, 2, 0))
    h, w = img.shape[:2]
    if layout == "source":
        sx, sy, ox = w / 320.0, h / 240.0, 0.0
    else:  # resized so that 240 -> 112 then cropped at x1 = round((W-112)/2)
        scale = h / 240.0 * (112 / h)
        resized_w = int(112 * 320 / 240)
        ox = int(round((resized_w - 112) / 2))
        sx = sy = scale
    value = 0
    yc = int((_BY0 + _BH / 2) * sy)
    for b in range(N_BITS):
        xc = int((_BX0 + (b + 0.5) * _BW) * sx - ox)
        bit = img[yc - 1:yc + 2, xc - 1:xc + 2].astype(np.int32).mean() > 128
        value = (value << 1) | int(bit)
    return value


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: int = 25, codec: str = "mpeg4",
                pix_fmt: str | None = None, options: dict | None = None, bit_rate: int | None = None,
                gop: int | None = None) -> Path:
    """Encode RGB frames into ``path`` (container from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps, 1) if not isinstance(fps, Fraction) else fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt or {"ffv1": "yuv444p", "libx264rgb": "rgb24", "png": "rgb24"}.get(codec, "yuv420p")
        if bit_rate:
            stream.bit_rate = bit_rate
        if gop:
            stream.codec_context.gop_size = gop
        if options:
            stream.options = dict(options)
        for img in _chain(first, frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _chain(first, rest):
    yield first
    yield from rest


def make_numbered_video(path: str | Path, n_frames: int, *, width: int = 320, height: int = 240,
                        codec: str = "mpeg4", seed: int = 0, **kw) -> Path:
    """A video whose frame i shows the number i (see :func:`numbered_frame`)."""
    if codec == "mpeg4":
        kw.setdefault("bit_rate", 4_000_000)
    return write_video(path, (numbered_frame(i, width, height, seed) for i in range(n_frames)), codec=codec, **kw)


def make_annotation(path: str | Path, labels: Sequence[str], entries: Sequence[tuple[str, str, str]]) -> Path:
    """Write a ``ucf101_01.json``-style annotation.

    ``entries`` are ``(video_id, label, subset)`` in database order.
    """
    database = {vid: {"subset": subset, "annotations": {"label": label}} for vid, label, subset in entries}
    path = Path(path)
    path.write_text(json.dumps({"labels": list(labels), "database": database}))
    return path


# --- helpers for the data-path tests (decode, clips) -------------------------------------------


def make_gappy_avi(path: str | Path, slots: Sequence[int], *, width: int = 320, height: int = 240,
                   fps: int = 25) -> Path:
    """An mpeg4 AVI whose frame ``i`` (showing number ``i``) is muxed at timestamp ``slots[i]``.

    Gaps in ``slots`` become the empty "drop" chunks AVI uses for skipped
    frames (the AVI muxer writes them for timestamp gaps), the case where the
    ffmpeg CLI's constant-frame-rate output duplicates frames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tb = Fraction(1, fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4_000_000
        packets = []
        for i in range(len(slots)):
            frame = av.VideoFrame.from_ndarray(numbered_frame(i, width, height), format="rgb24")
            frame.pts, frame.time_base = i, tb
            packets += stream.encode(frame)
        packets += stream.encode(None)
        for packet in packets:  # no B-frames: packet i carries frame i
            packet.pts = packet.dts = slots[packet.pts]
            out.mux(packet)
    return path


def make_audio_only(path: str | Path, *, seconds: float = 0.5, rate: int = 8000) -> Path:
    """A WAV file with a sine tone and no video stream."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        n = int(seconds * rate)
        samples = (np.sin(np.arange(n) * 0.05) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_undecodable_video(path: str | Path, n_packets: int = 8, *, seed: int = 0) -> Path:
    """An AVI that opens as 320x240 mpeg4 video but whose packets are random bytes (nothing decodes)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(n_packets):
            packet = av.Packet(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 25)
            packet.stream = stream
            out.mux(packet)
    return path
