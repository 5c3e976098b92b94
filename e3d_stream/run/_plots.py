"""The report's plots: a confusion matrix readable at 101 classes, per-class accuracy, two runs compared.

matplotlib (extra ``plot``) is imported only here and only through ``Figure`` +
``FigureCanvasAgg``: no pyplot, so no global backend or state of the caller is
touched. Each ``*_png`` function writes a file; the ``_*_bytes`` helpers give
the PNG bytes that :mod:`e3d_stream.run._html` embeds in the page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._fsutil import atomic_write_bytes
from ..errors import BackendUnavailableError, ConfigError
from ..scoring._perclass import PerClassStats

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

#: confusion_png(order=...): worst top-1 accuracy first, or annotation label order
ORDERS = ("accuracy", "label")
_NO_MPL = "matplotlib is not installed: pip install 'e3d_stream[plot]'"


# ── plots ───────────────────────────────────────────────────────────────────

def _mpl() -> tuple[type[Figure], type[FigureCanvasAgg]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BackendUnavailableError(_NO_MPL) from exc
    return Figure, FigureCanvasAgg


def _png(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _text(s: str) -> str:
    # A '$' pair would switch matplotlib to mathtext; class names are plain text.
    return str(s).replace("$", r"\$")


def _check_labels(stats: PerClassStats, labels: Sequence[str]) -> list[str]:
    if len(labels) != stats.n_classes:
        raise ConfigError(f"{len(labels)} labels given for statistics of {stats.n_classes} classes")
    return [str(x) for x in labels]


def _worst_first(stats: PerClassStats) -> list[int]:
    # Classes without videos have no accuracy: they go last, in label order.
    return sorted(range(stats.n_classes), key=lambda i: (stats.classes[i].top1 is None, stats.classes[i].top1 or 0, i))


def _sizes(n: int, *, dense: bool = False) -> tuple[float, float]:
    """(inches per class row, font size in points): small fonts only when there are many classes.

    ``dense`` (the confusion matrix, which is as wide as it is tall): 0.12 in rows
    at 101 classes, so that the PNG stays under ~1900 px wide at 110 dpi while a
    5.5 pt label (8.4 px) still has 13 px of row.
    """
    cell = 0.3 if n <= 20 else 0.2 if n <= 50 else 0.12 if dense else 0.155
    return cell, min(9.0, max(5.5, cell * 72 * 0.6))


def _confusion_bytes(stats: PerClassStats, labels: Sequence[str], *, order: str, max_labels: int | None,
                     n_worst: int) -> bytes:
    if order not in ORDERS:
        raise ConfigError(f"order={order!r} is not one of {ORDERS}")
    Figure, FigureCanvasAgg = _mpl()
    names = _check_labels(stats, labels)
    idx = _worst_first(stats) if order == "accuracy" else list(range(stats.n_classes))
    if max_labels is not None:
        idx = idx[: max(1, int(max_labels))]
    k = len(idx)
    scored = stats.confusion.sum(axis=1)  # a row is normalised by ALL its scored videos, shown columns or not
    frac = stats.confusion[np.ix_(idx, idx)] / np.maximum(scored[idx], 1)[:, None]
    cell, font = _sizes(k, dense=True)
    xlabels = [_text(names[i]) for i in idx]
    ylabels = [_text(f"{names[i]}  {_fmt(stats.classes[i].top1, '.2f')}") for i in idx]
    # Laid out by hand, in inches: constrained layout misplaces the tick labels of a fixed-aspect
    # matrix (they end up clipped). Label extents are estimated at 0.62 em per character.
    em = font / 72 * 0.62
    side = max(3.0, k * cell)
    left = 0.5 + em * max(len(t) for t in ylabels)
    bottom = 0.55 + em * max(len(t) for t in xlabels)
    top, column = 0.7, 3.6
    width, height = left + side + 0.35 + column, bottom + side + top
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)

    def place(x: float, y: float, w: float, h: float) -> Axes:  # inches from the bottom-left corner -> an axes
        return fig.add_axes((x / width, y / height, w / width, h / height))

    ax = place(left, bottom, side, side)
    # right column: the colour bar on top, the list of worst confusions below it
    cax = place(left + side + 0.45, bottom + side - 0.22, column - 0.6, 0.18)
    box = place(left + side + 0.35, bottom, column - 0.1, side - 0.75)
    cmap = _cmap("viridis", under="white")  # empty cells stay white so that every non-zero confusion shows
    im = ax.imshow(np.where(frac > 0, frac, -1.0), cmap=cmap, vmin=1e-9, vmax=1.0, interpolation="nearest")
    ticks = np.arange(k)
    ax.set_xticks(ticks, xlabels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, ylabels, fontsize=font)
    ax.set_xticks(ticks - 0.5, minor=True)
    ax.set_yticks(ticks - 0.5, minor=True)
    ax.grid(which="minor", color="0.88", linewidth=0.3)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=2, pad=1)
    ax.set_xlabel("predicted top-1", fontsize=font + 2)
    ax.set_ylabel("true class (its top-1 accuracy)", fontsize=font + 2)
    where = "worst top-1 first" if order == "accuracy" else "annotation label order"
    shown = f", {k} of {stats.n_classes} classes shown" if k < stats.n_classes else ""
    fig.suptitle(f"Top-1 confusion, row-normalised ({where}{shown})", fontsize=font + 4, y=1 - 0.2 / height)
    if k <= 20:  # small matrices: the counts themselves are readable
        for r, t in enumerate(idx):
            for c, p in enumerate(idx):
                if stats.confusion[t, p]:
                    ax.text(c, r, str(stats.confusion[t, p]), ha="center", va="center", fontsize=font,
                            color="black" if frac[r, c] > 0.6 else "white")
    cbar = fig.colorbar(im, cax=cax, orientation="horizontal")
    cbar.set_label("share of the true class's scored videos", fontsize=font + 1)
    cbar.ax.tick_params(labelsize=font)
    pos = {c: j for j, c in enumerate(idx)}
    worst = stats.worst_confusions(n_worst)
    lines = [f"{len(worst)} worst confusions", "true -> predicted (count)", ""]
    for rank, (t, p, count) in enumerate(worst, 1):
        lines.append(f"{rank:2d}. {_short(names[t])} -> {_short(names[p])} ({count})")
        if t in pos and p in pos:  # outline the cell on the matrix, numbered like the list
            ax.add_patch(_rect((pos[p] - 0.5, pos[t] - 0.5)))
            if k > 20:  # small matrices print counts in the cells; a rank beside them would be clutter
                    ax.text(pos[p] + 0.6, pos[t] - 0.6, str(rank), color="red", fontsize=max(4.0, font - 1),
                        ha="left", va="bottom")
    if not worst:
        lines.append("(none: every scored video is right)")
    box.axis("off")
    # Anchored below the axes' top edge so that the frame's padding is not clipped.
    box.text(0.03, 0.97, _text("\n".join(lines)), va="top", ha="left", family="monospace",
             fontsize=7.0, transform=box.transAxes,  # fixed: the column is 3.4 in at any class count
             bbox={"boxstyle": "round,pad=0.6", "facecolor": "#fff8e6", "edgecolor": "#d9a400"})
    return _png(fig, dpi=110)


def _short(name: str, width: int = 22) -> str:
    # The side box has a fixed width; long class names are cut there (the axes show them whole).
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _cmap(name: str, **extremes: Any) -> Colormap:
    from matplotlib import colormaps

    return colormaps[name].with_extremes(**extremes)  # a copy: the registered colormap stays as it is


def _rect(xy: tuple[float, float]) -> Rectangle:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, 1, 1, fill=False, edgecolor="red", linewidth=0.9)


def _per_class_bytes(stats: PerClassStats, labels: Sequence[str], *, title: str | None = None) -> bytes:
    Figure, FigureCanvasAgg = _mpl()
    names = _check_labels(stats, labels)
    idx = [i for i in _worst_first(stats) if stats.classes[i].videos]
    k = max(1, len(idx))
    cell, font = _sizes(k)
    fig = Figure(figsize=(9.0, max(3.0, k * cell + 1.4)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    acc = np.array([stats.classes[i].top1 for i in idx], dtype=float)
    y = np.arange(len(idx))
    ax.barh(y, acc, color=_cmap("RdYlGn")(acc), edgecolor="0.4", linewidth=0.3, height=0.8)
    for j, i in enumerate(idx):
        c = stats.classes[i]
        assert c.top1 is not None  # idx holds the classes with videos
        ax.text(min(c.top1, 1.0) + 0.01, j, f"{c.top1_hits}/{c.videos}", va="center", fontsize=font - 0.5)
    ax.set_yticks(y, [_text(names[i]) for i in idx], fontsize=font)
    ax.set_ylim(len(idx) - 0.5, -0.5)  # worst at the top
    ax.set_xlim(0, 1.12)
    mean = stats.mean_class_top1
    if mean is not None:
        ax.axvline(mean, color="0.2", linestyle="--", linewidth=0.8, label=f"mean class top-1 {mean:.3f}")
        # below the x axis: inside, it would cover bars whatever the accuracies are
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(3.0, k * cell)), fontsize=font + 1,
                  frameon=False)
    ax.set_xlabel("top-1 accuracy", fontsize=font + 2)
    skipped = stats.n_classes - len(idx)
    ax.set_title(title or ("Per-class top-1 accuracy, worst first"
                           + (f" ({skipped} classes without videos not shown)" if skipped else "")),
                 fontsize=font + 3)
    ax.tick_params(axis="x", labelsize=font + 1)
    return _png(fig, dpi=110)


def confusion_png(stats: PerClassStats, labels: Sequence[str], path: str | Path, *, max_labels: int | None = None,
                  order: str = "accuracy", n_worst: int = 15) -> Path:
    """Draw the top-1 confusion matrix as a PNG at ``path``.

    Rows and columns are ordered by per-class top-1 accuracy (worst first;
    ``order="label"``: annotation order), the colour of a cell is its share of
    the row's scored videos, every class is labelled (fonts and figure size scale
    with the class count; 101 classes stay readable) and the ``n_worst``
    off-diagonal cells are outlined and listed as ``true -> predicted (count)``
    beside the matrix. ``max_labels``: show only the first that many classes of
    the order (e.g. the 30 worst); None shows all.

    Raises:
        BackendUnavailableError: matplotlib is not installed.
        ConfigError: ``order`` unknown, or ``labels`` not one per class.
    """
    data = _confusion_bytes(stats, labels, order=order, max_labels=max_labels, n_worst=n_worst)
    return atomic_write_bytes(path, data)


def per_class_png(stats: PerClassStats, labels: Sequence[str], path: str | Path) -> Path:
    """Draw per-class top-1 accuracy as sorted horizontal bars (worst at the top) at ``path``.

    Classes without videos are left out (the title says how many). Raises
    :class:`BackendUnavailableError` without matplotlib.
    """
    return atomic_write_bytes(path, _per_class_bytes(stats, labels))


def compare_png(stats_a: PerClassStats, stats_b: PerClassStats, labels: Sequence[str], path: str | Path, *,
                names: tuple[str, str] = ("A", "B")) -> Path:
    """Per-class top-1 of two runs as a dumbbell chart (one row per class, sorted by B - A) at ``path``.

    Raises :class:`BackendUnavailableError` without matplotlib.
    """
    Figure, FigureCanvasAgg = _mpl()
    lab = _check_labels(stats_a, labels)
    _check_labels(stats_b, labels)
    idx = [i for i in range(len(lab)) if stats_a.classes[i].videos and stats_b.classes[i].videos]
    a = np.array([stats_a.classes[i].top1 for i in idx], dtype=float)
    b = np.array([stats_b.classes[i].top1 for i in idx], dtype=float)
    order = sorted(range(len(idx)), key=lambda j: (b[j] - a[j], idx[j]))  # largest drop at the top
    k = max(1, len(idx))
    cell, font = _sizes(k)
    fig = Figure(figsize=(9.0, max(3.0, k * cell + 1.4)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(order))
    aa, bb = a[order], b[order]
    colors = np.where(bb > aa, "tab:green", np.where(bb < aa, "tab:red", "0.6"))
    # an array of colour names works at run time; matplotlib's stub lists sequences only
    ax.hlines(y, aa, bb, colors=colors, linewidth=1.2)  # type: ignore[arg-type]
    ax.scatter(aa, y, s=12, color="0.3", label=_text(names[0]), zorder=3)
    ax.scatter(bb, y, s=12, marker="D", color="tab:blue", label=_text(names[1]), zorder=3)
    ax.set_yticks(y, [_text(lab[idx[j]]) for j in order], fontsize=font)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", color="0.9")
    ax.set_xlabel("per-class top-1 accuracy", fontsize=font + 2)
    ax.set_title(_text(f"Per-class top-1: {names[0]} vs {names[1]} (sorted by change)"), fontsize=font + 3)
    # Below the x axis: inside, it would cover the rows at one of the ends.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(3.0, k * cell)), ncols=2, fontsize=font + 1,
              frameon=False)
    return atomic_write_bytes(path, _png(fig, dpi=110))


# ── HTML ────────────────────────────────────────────────────────────────────

def _fmt(value: object, spec: str = ".5f") -> str:
    """A number formatted, or "n/a" when missing (or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    return format(value, spec)
