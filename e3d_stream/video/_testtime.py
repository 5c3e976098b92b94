"""upstream's test-time transforms (okankop/Efficient-3DCNNs main.py, ``--test``), beyond the reference's defaults.

    Scale(int(112 / scale_in_test)) ─► CornerCrop(112, crop_position_in_test)   Geometry
    ToTensor(norm_value) ─► Normalize(mean, std)                                  Normalization

The defaults (scale 112, centre crop; minus the activitynet mean) are the
reference's preprocessing and keep the fast exact paths of :mod:`._transforms`;
anything else runs Pillow's literal sequence (geometry) or the float32 formula
below (normalisation) in the decode workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..constants import MEAN_DATASETS, MEAN_RGB, SAMPLE_SIZE, STD_RGB
from ..errors import ConfigError
from ._transforms import crop_origin, scaled_size

#: upstream ``CornerCrop`` positions (``--crop_position_in_test``); "c" is ``CenterCrop``.
CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")


def corner_origin(width: int, height: int, size: int = SAMPLE_SIZE, position: str = "c") -> tuple[int, int]:
    """Top-left corner of upstream ``CornerCrop(size, position)`` on a ``width`` x ``height`` image.

    ``c`` is :func:`crop_origin` (rounded centre); ``tl``/``tr``/``bl``/``br`` put the crop in
    that corner (``x1 = width - size`` on the right, ``y1 = height - size`` at the bottom).
    """
    if position == "c":
        return crop_origin(width, height, size)
    if position not in CROP_POSITIONS:
        raise ConfigError(f"crop position {position!r} is not one of {', '.join(CROP_POSITIONS)}")
    return (width - size if position[1] == "r" else 0), (height - size if position[0] == "b" else 0)


@dataclass(frozen=True)
class Geometry:
    """Upstream's test transform: ``Scale(scale)`` (shorter side) then ``CornerCrop(size, crop)``.

    The default (scale 112, centre crop) is the reference's ``Scale(112)`` + ``CenterCrop(112)``
    and runs the fast exact kernels; any other geometry runs Pillow's literal sequence.
    """

    scale: int = SAMPLE_SIZE
    crop: str = "c"

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ConfigError(f"scale must be a positive integer, got {self.scale!r}")
        if self.crop not in CROP_POSITIONS:
            raise ConfigError(f"crop position {self.crop!r} is not one of {', '.join(CROP_POSITIONS)}")

    @property
    def is_default(self) -> bool:
        return self.scale == SAMPLE_SIZE and self.crop == "c"

    @classmethod
    def from_test_options(cls, scale_in_test: float = 1.0, crop_position_in_test: str = "c") -> Geometry:
        """upstream main.py: ``Scale(int(opt.sample_size / opt.scale_in_test))``, ``CornerCrop(.., position)``."""
        if not scale_in_test > 0:
            raise ConfigError(f"scale_in_test must be > 0, got {scale_in_test!r}")
        return cls(int(SAMPLE_SIZE / scale_in_test), crop_position_in_test)

    def apply(self, frame: np.ndarray | Image.Image, size: int = SAMPLE_SIZE) -> np.ndarray:
        """(size, size, 3) uint8: Pillow resize (BILINEAR) to the scaled size, then the corner crop."""
        img = self.scaled(frame)
        w, h = img.size
        x1, y1 = corner_origin(w, h, size, self.crop)
        return np.asarray(img.crop((x1, y1, x1 + size, y1 + size)))

    def scaled(self, frame: np.ndarray | Image.Image) -> Image.Image:
        """upstream ``Scale(scale)`` alone: the whole frame, shorter side resized with Pillow's BILINEAR."""
        img = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))
        if img.mode != "RGB":
            img = img.convert("RGB")
        target = scaled_size(*img.size, self.scale)
        return img if target is None else img.resize(target, Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class Normalization:
    """upstream ``ToTensor(norm_value)`` + ``Normalize(mean, std)`` on uint8 clips (float32 out).

    ``mean`` and ``std`` are upstream's lists (already divided by ``norm_value``, as
    ``mean.py`` returns them); each is applied in float32, like ``t.sub_(m).div_(s)``
    on a float tensor::

        out = (float32(x) / float32(norm_value) - float32(mean)) / float32(std)

    The default is the reference's: ``float32(x) - float32(activitynet mean)``.
    """

    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    norm_value: int = 1

    @property
    def is_default(self) -> bool:
        return self == Normalization()

    @classmethod
    def from_options(cls, *, mean_dataset: str = "activitynet", no_mean_norm: bool = False, std_norm: bool = False,
                     norm_value: int = 1) -> Normalization:
        """upstream main.py's ``norm_method`` (lines 58-63): no mean only without std_norm."""
        if mean_dataset not in MEAN_DATASETS:
            raise ConfigError(f"mean_dataset={mean_dataset!r} is not one of {', '.join(map(repr, MEAN_DATASETS))}")
        if isinstance(norm_value, bool) or not isinstance(norm_value, int) or norm_value < 1:
            raise ConfigError(f"norm_value must be a positive integer, got {norm_value!r}")
        m, s = MEAN_DATASETS[mean_dataset], STD_RGB
        mean = (m[0] / norm_value, m[1] / norm_value, m[2] / norm_value)   # get_mean(norm_value, dataset)
        std = (s[0] / norm_value, s[1] / norm_value, s[2] / norm_value)    # get_std(norm_value)
        if no_mean_norm and not std_norm:
            return cls((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), norm_value)
        if not std_norm:
            return cls(mean, (1.0, 1.0, 1.0), norm_value)
        return cls(mean, std, norm_value)

    def into(self, out: np.ndarray, clips: np.ndarray) -> np.ndarray:
        """``out[:] = normalised clips``; the channel axis is the one before the last three (C, T, H, W)."""
        shape = (3, 1, 1, 1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        if self.norm_value == 1 and self.std == (1.0, 1.0, 1.0):
            np.subtract(clips, mean, out=out, dtype=np.float32)   # the reference's one operation
            return out
        np.divide(clips, np.float32(self.norm_value), out=out, dtype=np.float32)
        np.subtract(out, mean, out=out)
        if self.std != (1.0, 1.0, 1.0):
            np.divide(out, np.asarray(self.std, np.float32).reshape(shape), out=out)
        return out


#: ``--views`` crops per clip: 1 (the geometry's crop), 3 (along the long side), 5 (upstream's CornerCrop positions)
VIEW_CROPS = (1, 3, 5)


@dataclass(frozen=True)
class Views:
    """``--views CLIPSxCROPS``: a multi-view test protocol beyond upstream's (not the seed's protocol).

    ``clips`` windows spread evenly over the video (:func:`~._sampling.uniform_plan`), or
    ``None`` (spelled ``all``) for the seed's non-overlapping windows; ``crops`` 112x112
    crops of each scaled frame:

    * 1: the geometry's crop (the reference's rounded centre crop by default);
    * 3: three along the long side, as MMAction2's ``ThreeCrop`` places them: start,
      centre (the reference's rounded centre), end; a square frame gives the centre three times;
    * 5: upstream's ``CornerCrop`` positions in the order c, tl, tr, bl, br.

    A video's views are clip-major (clip 0 crop 0, clip 0 crop 1, ...) and are averaged like
    clips. ``allx1`` is the default protocol itself; ``1x1`` (one window at the start,
    centre crop) equals it for every video of up to 17 frames.
    """

    clips: int | None = None
    crops: int = 1

    def __post_init__(self) -> None:
        if self.clips is not None and (isinstance(self.clips, bool) or not isinstance(self.clips, int)
                                       or self.clips < 1):
            raise ConfigError(f"views: clips must be a positive integer or 'all', got {self.clips!r}")
        if self.crops not in VIEW_CROPS:
            raise ConfigError(f"views: crops must be one of {', '.join(map(str, VIEW_CROPS))}, got {self.crops!r}")

    @classmethod
    def parse(cls, text: str) -> Views:
        """``"10x3"`` -> Views(10, 3); ``"allx1"`` -> Views(None, 1) (the seed's windows)."""
        clips, sep, crops = str(text).replace(" ", "").lower().partition("x")
        try:
            if not sep:
                raise ValueError
            n_clips, n_crops = None if clips == "all" else int(clips), int(crops)
        except ValueError:
            raise ConfigError(f"views must be CLIPSxCROPS (e.g. 10x3, allx1), got {text!r}") from None
        return cls(n_clips, n_crops)

    @property
    def is_default(self) -> bool:
        """The seed's protocol: every window, one crop."""
        return self.clips is None and self.crops == 1

    @property
    def name(self) -> str:
        return f"{'all' if self.clips is None else self.clips}x{self.crops}"

    def crop_origins(self, width: int, height: int, size: int = SAMPLE_SIZE,
                     position: str = "c") -> list[tuple[int, int]]:
        """Top-left corners of this protocol's crops on a scaled ``width`` x ``height`` frame."""
        if self.crops == 1:
            return [corner_origin(width, height, size, position)]
        if self.crops == 5:
            return [corner_origin(width, height, size, p) for p in CROP_POSITIONS]
        cx, cy = crop_origin(width, height, size)
        if width > height:
            return [(0, cy), (cx, cy), (width - size, cy)]
        if height > width:
            return [(cx, 0), (cx, cy), (cx, height - size)]
        return [(cx, cy)] * 3


__all__ = ["CROP_POSITIONS", "VIEW_CROPS", "Geometry", "Normalization", "Views", "corner_origin"]
