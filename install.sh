#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with e3d_stream and every
# optional dependency that installs on this machine (ONNX, ONNX Runtime, onnxsim,
# torch CPU, OpenCV, matplotlib, test tools). Re-running it is harmless.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[all]'
.venv/bin/python -c "import e3d_stream, av, PIL, onnxruntime, torch; print('e3d_stream', e3d_stream.__version__, 'ready: av', av.__version__, 'torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)"
