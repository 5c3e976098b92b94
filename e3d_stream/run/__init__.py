"""The run layer: configuration, ``evaluate`` (one host), run state and reports.

It sits above the stages (video, stream, sessions, scoring, seed), which never import it.
"""

from __future__ import annotations

from ._config import EvalConfig
from ._evaluate import evaluate
from ._html import write_report
from ._report import Report, load_report

__all__ = ["EvalConfig", "Report", "evaluate", "load_report", "write_report"]
