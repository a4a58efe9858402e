#!/usr/bin/env bash
# Create .venv and install genoseg with its test extra. torch is pinned to a CPU build
# first (GENOSEG_TORCH overrides) so that pip never resolves a multi-GB CUDA wheel on a
# CPU machine; with torch already present nothing is reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "${GENOSEG_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[test]"
# The batch workflows (workflows/, tests/test_workflow.py): Snakemake and its SLURM plugin.
.venv/bin/python -m pip install -q "snakemake==9.27.1" "snakemake-executor-plugin-slurm==2.8.0"
