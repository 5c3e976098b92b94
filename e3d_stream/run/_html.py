"""Reports people can look at: a self-contained ``report.html``, per-class CSV and PNG plots.

``write_report(folder, result, results, truth, labels)`` writes, side by side::

    report.html    one file: inline CSS, the PNGs embedded as data: URIs, no script, no URL
    per_class.csv  PerClassStats.to_csv_text()
    confusion.png  row-normalised top-1 confusion matrix, worst classes first
    per_class.png  per-class top-1 accuracy, sorted

The plots need matplotlib (extra ``plot``), imported only here and only through
``Figure`` + ``FigureCanvasAgg``: no pyplot, so no global backend or state of the
caller is touched. Without matplotlib the HTML and CSV are still written and
the page says why the images are missing.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .._fsutil import atomic_write_bytes, atomic_write_text
from ..errors import BackendUnavailableError
from ..scoring._metrics import VideoResult
from ..scoring._perclass import PerClassStats, per_class_stats

__all__ = ["compare_png", "confusion_png", "per_class_png", "write_html_report", "write_report"]

from ._plots import (  # noqa: F401 (re-exported: the report's public plotting calls)
    _NO_MPL,
    _check_labels,
    _confusion_bytes,
    _fmt,
    _per_class_bytes,
    _worst_first,
    compare_png,
    confusion_png,
    per_class_png,
)

REPORT_NAME, CSV_NAME, CONFUSION_NAME, PER_CLASS_NAME = "report.html", "per_class.csv", "confusion.png", "per_class.png"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1500px;
color:#1d2430;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:2px solid #dde3ea}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d5dbe3;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#eef2f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.fatal td{background:#fdecec}tr.warning td{background:#fff8e1}
.kpi{display:flex;flex-wrap:wrap;gap:12px}.kpi div{border:1px solid #d5dbe3;border-radius:6px;padding:8px 14px;
min-width:150px}.kpi b{display:block;font-size:22px}.note{color:#6b4e00;background:#fff8e1;padding:8px;
border-radius:4px}.muted{color:#667}.fig{overflow-x:auto;border:1px solid #e3e7ec;padding:4px}
.fig img{display:block}.zoom:checked~.fig img{width:100%;height:auto}
label{font-size:12px;color:#556}pre{white-space:pre-wrap;margin:0;font-size:12px}
.bar{display:inline-block;height:10px;background:#4c8bd6;vertical-align:middle}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)




def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = (),
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table (no header row for None); every cell is escaped here, but ``("raw", html)`` cells."""
    out = ["<table>"]
    if headers is not None:
        out += ["<thead><tr>", *(f"<th>{_esc(h)}</th>" for h in headers), "</tr></thead>"]
    out.append("<tbody>")
    for r, row in enumerate(rows):
        cls = f' class="{_esc(row_classes[r])}"' if row_classes else ""
        out.append(f"<tr{cls}>")
        for c, cell in enumerate(row):
            body = cell[1] if isinstance(cell, tuple) and cell[0] == "raw" else _esc(cell)
            out.append(f'<td class="n">{body}</td>' if c in numeric else f"<td>{body}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _mapping_table(d: object, empty: str) -> str:
    if not isinstance(d, Mapping) or not d:
        return f'<p class="muted">{_esc(empty)}</p>'
    return _table(("key", "value"), [(k, _value(v)) for k, v in d.items()])


def _summary(result: Mapping[str, Any], stats: PerClassStats) -> str:
    counts, hits = result.get("counts") or {}, result.get("hits") or {}
    tp = result.get("throughput") or {}
    videos = counts.get("videos")

    def frac(key: str) -> str:
        return f"{hits.get(key, 'n/a')}/{videos if videos is not None else 'n/a'}"

    kpis = [("top-1", _fmt(result.get("top1")), frac("1")), ("top-5", _fmt(result.get("top5")), frac("5")),
            ("mean class top-1", _fmt(stats.mean_class_top1), "over classes with videos"),
            ("mean class top-5", _fmt(stats.mean_class_top5), "over classes with videos"),
            ("clip top-1", _fmt(result.get("clip_top1")), f"{counts.get('clips', 'n/a')} clips")]
    cards = "".join(f"<div>{_esc(n)}<b>{_esc(v)}</b><span class=muted>{_esc(s)}</span></div>" for n, v, s in kpis)
    rows = [("videos in subset", counts.get("videos", "n/a")), ("scored", counts.get("scored", "n/a")),
            ("excluded (no score, counted as misses)", counts.get("excluded", "n/a")),
            ("warnings (scored)", counts.get("warnings", "n/a")), ("clips", counts.get("clips", "n/a")),
            ("dropped clips", counts.get("dropped_clips", "n/a")),
            ("dropped videos (compat=modelzoo: never scored, counted as misses)",
             ", ".join(result.get("dropped_videos") or []) or counts.get("dropped_videos", "n/a")),
            ("end-to-end clips/s", _fmt(tp.get("end_to_end_clips_per_s"), ".1f")),
            ("clips/s once running (first to last batch scored)", _fmt(tp.get("running_clips_per_s"), ".1f")),
            ("compute-only clips/s (1000*B/mean ms)", _fmt(tp.get("compute_clips_per_s"), ".1f")),
            ("device busy once running (mean over devices)", _fmt(tp.get("running_device_busy_fraction"), ".2f")),
            ("batch size", tp.get("batch_size", "n/a")),
            ("test protocol", _protocol(result.get("config") or {})),
            ("wall time (s)", _fmt((result.get("timings_s") or {}).get("wall"), ".2f"))]
    return f'<div class="kpi">{cards}</div>' + _table(None, rows, numeric=(1,))


def _protocol(cfg: Mapping[str, Any]) -> str:
    views = cfg.get("views")
    if views in (None, "allx1"):
        return "the seed's: every 16-frame window, one crop"
    return f"views {views}: clips x crops averaged per video (not the seed's protocol)"


def _failures(result: Mapping[str, Any]) -> str:
    failures = result.get("failures") or []
    if not failures:
        return '<p class="muted">No failures: every video was scored without warnings.</p>'
    rows, classes = [], []
    for f in failures:
        fatal = bool(f.get("fatal", True))
        rows.append((f.get("video_id", "n/a"), f.get("reason", "n/a"), "excluded (fatal)" if fatal else "warning",
                     ("raw", f"<pre>{_esc(f.get('detail', ''))}</pre>")))
        classes.append("fatal" if fatal else "warning")
    return _table(("video_id", "reason", "kind", "detail"), rows, row_classes=classes)


def _per_class_table(stats: PerClassStats, labels: Sequence[str]) -> str:
    rows = []
    for rank, i in enumerate(_worst_first(stats), 1):
        c = stats.classes[i]
        bar = ("raw", "" if c.top1 is None else f'<span class="bar" style="width:{100 * c.top1:.0f}px"></span>')
        confused = "" if c.most_confused_with is None else f"{labels[c.most_confused_with]} ({c.confused_count})"
        rows.append((rank, labels[i], c.videos, f"{_fmt(c.top1, '.3f')} ({c.top1_hits})", bar,
                     f"{_fmt(c.top5, '.3f')} ({c.top5_hits})", c.unscored, confused))
    return _table(("#", "class", "videos", "top-1 (hits)", "", f"top-{stats.k5} (hits)", "unscored",
                   "most often taken for (count)"), rows, numeric=(0, 2, 3, 5, 6))


def _worst_table(stats: PerClassStats, labels: Sequence[str], n: int = 15) -> str:
    worst = stats.worst_confusions(n)
    if not worst:
        return '<p class="muted">No confusion: every scored video has the right top-1.</p>'
    scored = stats.confusion.sum(axis=1)
    rows = [(r, labels[t], labels[p], count, f"{count / scored[t]:.2f}") for r, (t, p, count) in enumerate(worst, 1)]
    return (f'<p>The {len(worst)} most frequent confusions (numbered in red on the matrix):</p>'
            + _table(("#", "true class", "predicted top-1", "videos", "share of the class"), rows,
                     numeric=(0, 3, 4)))


def _img(data: bytes | None, alt: str, name: str) -> str:
    if data is None:
        return ""
    # Shown pixel for pixel, so 101 class labels stay legible: a wide matrix scrolls sideways. The
    # checkbox (CSS only, no script) fits it to the page width for an overview.
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    key = _esc(name.replace(".", "-"))
    return (f'<input type="checkbox" class="zoom" id="fit-{key}"><label for="fit-{key}"> fit to page width</label>'
            f'<div class="fig"><img alt="{_esc(alt)}" width="{_png_width(data)}" src="{src}"></div>')


def _png_width(data: bytes) -> int:
    return int.from_bytes(data[16:20], "big")  # IHDR width, right after the 8-byte signature and chunk header


def _render(result: Mapping[str, Any], stats: PerClassStats, labels: Sequence[str], title: str | None,
            images: Mapping[str, bytes | None], why_no_images: str | None) -> str:
    cfg = result.get("config") or {}
    title = title or f"e3d_stream report: {Path(str(cfg.get('model') or 'run')).name}"
    note = f'<p class="note">Images not drawn: {_esc(why_no_images)}.</p>' if why_no_images else ""
    timings = result.get("timings_s") or {}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">subset {_esc(cfg.get("subset", "n/a"))}, {stats.n_classes} classes, '
        f"written by e3d_stream {_esc(__version__)}; files beside this page: {CSV_NAME}, "
        f"{CONFUSION_NAME}, {PER_CLASS_NAME}.</p>",
        "<h2>Summary</h2>", _summary(result, stats),
        "<h2>Stage timings</h2>",
        _table(("stage", "seconds"), [(k, _fmt(v, ".3f")) for k, v in timings.items()], numeric=(1,))
        if timings else '<p class="muted">n/a</p>',
        f"<h2>Failure ledger ({len(result.get('failures') or [])})</h2>", _failures(result),
        "<h2>Per-class accuracy (worst first)</h2>", note,
        _img(images.get(PER_CLASS_NAME), "per-class top-1", PER_CLASS_NAME),
        _per_class_table(stats, labels),
        "<h2>Confusion matrix</h2>", _worst_table(stats, labels), note,
        _img(images.get(CONFUSION_NAME), "confusion matrix", CONFUSION_NAME),
        "<h2>Configuration</h2>", _mapping_table(cfg, "n/a"),
        "<h2>Session</h2>", _mapping_table(result.get("session"), "n/a"),
        "<h2>Versions</h2>", _mapping_table(result.get("versions"), "n/a"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _write_all(folder: str | Path, result: Mapping[str, Any], stats: PerClassStats, labels: Sequence[str],
               title: str | None) -> dict[str, Path]:
    folder = Path(folder)
    names = _check_labels(stats, labels)
    paths = {"csv": atomic_write_text(folder / CSV_NAME, stats.to_csv_text())}
    images: dict[str, bytes | None] = {}
    why = None
    try:
        images[CONFUSION_NAME] = _confusion_bytes(stats, names, order="accuracy", max_labels=None, n_worst=15)
        images[PER_CLASS_NAME] = _per_class_bytes(stats, names)
    except BackendUnavailableError as exc:
        why = str(exc)
    for key, name in (("confusion", CONFUSION_NAME), ("per_class", PER_CLASS_NAME)):
        data = images.get(name)
        if data is not None:
            paths[key] = atomic_write_bytes(folder / name, data)
    paths["html"] = atomic_write_text(folder / REPORT_NAME, _render(result, stats, names, title, images, why))
    return paths


def write_html_report(folder: str | Path, *, result: Mapping[str, Any], stats: PerClassStats, labels: Sequence[str],
                      title: str | None = None) -> Path:
    """Write ``report.html`` (self-contained) with ``per_class.csv``, ``confusion.png``, ``per_class.png`` beside it.

    ``result`` is the ``result.json`` dict (:meth:`Report.to_dict`); missing keys
    show as "n/a". Every string from the data is HTML-escaped. Without
    matplotlib the PNGs are skipped and the page says so. Returns the HTML path.
    """
    return _write_all(folder, result, stats, labels, title)["html"]


def write_report(folder: str | Path, result: Mapping[str, Any], results: Mapping[str, VideoResult],
                 truth: Mapping[str, int], labels: Sequence[str], *, title: str | None = None) -> dict[str, Path]:
    """Compute :func:`per_class_stats` and write the whole report into ``folder``.

    ``results``: video_id -> final result; ``truth``: video_id -> class index
    for every evaluated video (unscored ones count as misses); ``labels``:
    class names in index order. Returns ``{"html", "csv", "confusion", "per_class"}``
    -> path (the two PNG keys only when matplotlib is installed).
    """
    stats = per_class_stats(results, truth, labels)
    return _write_all(folder, result, stats, labels, title)
