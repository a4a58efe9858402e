#!/usr/bin/env bash
# The test command: lint, then the whole pytest suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check genoseg tests benchmarks
.venv/bin/ruff format --check genoseg tests benchmarks
.venv/bin/python -m pytest -q "$@"
