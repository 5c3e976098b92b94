"""README's Python examples that can run here do run: the documentation cannot rot silently."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(marker: str) -> str:
    text = README.read_text()
    start = text.index(marker)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block after {marker!r}"
    return match.group(1)


def test_the_clip_loader_example_runs(capsys):
    code = _block_after("The clip loader, for feature extraction")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    # 8 demo videos of 40-80 frames: several float32 batches of up to 8 clips, then an empty ledger
    batches = [line for line in out if line.split()[0].isdigit()]
    assert len(batches) >= 3 and all("float32 (" in line for line in batches)
    assert batches[0].startswith("0 float32 (8, 3, 16, 112, 112)")
    assert out[-1] == "[]"
