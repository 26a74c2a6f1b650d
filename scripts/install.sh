#!/usr/bin/env bash
# Creates .venv and installs sla-nas into it (with the test extra when given --test).
# PyTorch is installed first as the CPU build pinned below: an unpinned torch may pull a
# multi-GB CUDA build. The project itself accepts any torch>=2.5.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
