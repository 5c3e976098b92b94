"""The HTML report in a real browser: headless Chromium renders it and the screenshot is not blank.

Runs ``scripts/check_report_in_browser.sh`` on a 101-class synthetic report.
Slow (a browser start) and skipped where Chromium is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_reports import make_synthetic_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_report_in_browser.sh"
#: RdYlGn's top colour, the bars of the perfect classes in per_class.png
DARK_GREEN = np.array([0, 104, 55])


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    from e3d_stream.run._html import write_report

    run = make_synthetic_run(tmp_path / "run", seed=1)
    paths = write_report(tmp_path / "run", run["result"], run["results"], run["truth"], run["labels"])
    shot = tmp_path / "shot" / "report.png"
    res = subprocess.run(["bash", str(SCRIPT), str(paths["html"]), str(shot), "1400x3000"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(shot)
    assert shot.stat().st_size > 50_000
    with image.open(shot) as im:
        assert im.size == (1400, 3000)
        pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert pixels.std() > 20  # not a blank (single colour) page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    # the embedded per-class chart rendered: its dark-green bars are on screen
    near = np.abs(pixels - DARK_GREEN).max(axis=2) <= 6
    assert near.sum() > 2_000


def test_script_skips_without_chromium(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    # PATH holds an empty folder only: no browser can be found
    res = subprocess.run([bash, str(SCRIPT), str(tmp_path / "report.html")], capture_output=True, text=True,
                         env={"PATH": str(tmp_path)}, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("skipped: no chromium")
