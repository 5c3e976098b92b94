"""Test stand-in for Ascend's ``ais_bench`` package (see ``infer/interface.py``)."""
