"""The seed workflow's formats and steps: k.bin/.info files, the bin dump, ais_bench outputs, ONNX export."""

from __future__ import annotations

from ._binio import TAIL_POLICIES, AisSummary, BinWriter, iter_ais_outputs, read_info, read_summary
from ._dump import DumpReport, dump_bins
from ._export import ExportResult, atc_command, export_onnx

__all__ = ["TAIL_POLICIES", "AisSummary", "BinWriter", "DumpReport", "ExportResult", "atc_command", "dump_bins",
           "export_onnx", "iter_ais_outputs", "read_info", "read_summary"]
