"""The package reads like the data flow: stages import only from stages below them.

    ground (errors, ledger, constants, _fsutil)  <  models  <  video  <  stream
      <  sessions  <  scoring  <  seed  <  run  <  commands, cli

A module may import its own stage and any stage to its left (plus ``errors``
from anywhere); an import to the right is a layering defect. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import e3d_stream

PKG = Path(e3d_stream.__file__).parent

RANK = {
    "errors": 0, "ledger": 0, "constants": 0, "_fsutil": 0, "__init__": 0,
    "models": 1, "video": 2, "stream": 3, "sessions": 4, "scoring": 5, "seed": 6, "run": 7,
    "commands": 8, "cli": 8, "__main__": 8,
}


def _stage(parts: list[str]) -> str:
    head = parts[0]
    return head[:-3] if head.endswith(".py") else head


def _imported_stages(path: Path) -> set[tuple[str, int]]:
    rel = path.relative_to(PKG).parts
    package = ["e3d_stream", *rel[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target[0] != "e3d_stream":
                continue
            if len(target) == 1:  # from e3d_stream import x, y: each name is the stage
                for alias in node.names:
                    found.add((alias.name, node.lineno))
            else:
                found.add((target[1], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "e3d_stream" and len(parts) > 1:
                    found.add((parts[1], node.lineno))
    return found


def test_every_module_imports_only_downward():
    bad = []
    modules = sorted(PKG.rglob("*.py"))
    assert len(modules) > 40
    for path in modules:
        stage = _stage(list(path.relative_to(PKG).parts))
        assert stage in RANK, f"{path}: a new top-level module or stage needs a rank here"
        for target, line in _imported_stages(path):
            if target == "__version__" or target == "errors":
                continue
            if target not in RANK:
                bad.append(f"{path.relative_to(PKG)}:{line} imports unknown e3d_stream.{target}")
            elif RANK[target] > RANK[stage] and stage != "__init__":
                bad.append(f"{path.relative_to(PKG)}:{line} ({stage}) imports upward: {target}")
    assert not bad, "\n".join(bad)


def test_stage_packages_expose_only_public_modules_privately():
    """Inside a stage package every module is private; the package's __init__ is its API."""
    for stage in ("video", "stream", "scoring", "seed", "run", "sessions"):
        for path in (PKG / stage).glob("*.py"):
            assert path.name == "__init__.py" or path.name.startswith("_"), path
        api = __import__(f"e3d_stream.{stage}", fromlist=["__all__"])
        assert api.__all__, stage
        for name in api.__all__:
            assert getattr(api, name) is not None, (stage, name)
