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


def test_the_clip_loader_example_runs_as_a_script(tmp_path):
    # as a user runs it: its own file, __main__, spawned decode workers that re-import it
    import subprocess
    import sys

    script = tmp_path / "loader_example.py"
    script.write_text(_block_after("The clip loader, for feature extraction"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    # 8 demo videos of 40-80 frames: several float32 batches of up to 8 clips, then an empty ledger
    batches = [line for line in out if line.split()[0].isdigit()]
    assert len(batches) >= 3 and all("float32 (" in line for line in batches)
    assert batches[0].startswith("0 float32 (8, 3, 16, 112, 112)")
    assert out[-1] == "[]"


def test_the_postprocess_example_uses_public_names_it_imports():
    # the rest needs an NPU's outputs; its imports must work and cover every module-level name it uses
    import ast

    code = _block_after("From Python, the same pieces")
    tree = ast.parse(code)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    namespace: dict = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), namespace)
    assigned = {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.For, ast.comprehension))
                for t in ast.walk(n.target if not isinstance(n, ast.Assign) else n.targets[0])
                if isinstance(t, ast.Name)}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    import builtins
    missing = used - set(namespace) - assigned - set(dir(builtins))
    assert not missing, f"README's postprocess example uses names it never defines: {sorted(missing)}"
    assert all(not (isinstance(n, ast.ImportFrom) and "._" in (n.module or "")) for n in imports)   # public API only
