"""Shared test configuration.

Parity tests read the reference data in ``../shared/fixtures`` at test time (it
is never copied into the repository). Where it is absent they skip, unless
``E3D_REQUIRE_FIXTURES=1`` (set by ``.ci/run``), where they fail instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

DEFAULT_FIXTURES = ROOT.parent / "shared" / "fixtures"


def fixtures_path() -> Path | None:
    path = Path(os.environ.get("E3D_FIXTURES", DEFAULT_FIXTURES))
    return path if (path / "expected.json").is_file() else None


def require_fixtures() -> Path:
    """Return the fixtures folder, or skip (fail under E3D_REQUIRE_FIXTURES=1)."""
    path = fixtures_path()
    if path is None:
        msg = f"parity fixtures not found at {os.environ.get('E3D_FIXTURES', DEFAULT_FIXTURES)}"
        if os.environ.get("E3D_REQUIRE_FIXTURES") == "1":
            pytest.fail(msg + " and E3D_REQUIRE_FIXTURES=1")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return require_fixtures()


@pytest.fixture(scope="session")
def expected(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "expected.json").read_text())


@pytest.fixture(scope="session")
def ref_clips(fixtures_dir: Path) -> list:
    return json.loads((fixtures_dir / "reference" / "clips.json").read_text())
