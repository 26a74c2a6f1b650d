#!/usr/bin/env bash
# Creates .venv and installs sla-nas into it (with the test extra when given --test).
# PyTorch is installed first as the CPU build pinned below: an unpinned torch may pull a
# multi-GB CUDA build. The project itself accepts any torch>=2.5.
# With --test, the Debian packages the end-to-end tests run for real are installed too when
# missing (as root, with apt-get): the PostgreSQL 15 server and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--test" ]; then
  missing=()
  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing ${missing[*]} (Debian packages for the end-to-end tests)" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    else
      echo "note: ${missing[*]} missing (installing needs root and apt-get):" \
           "their tests are skipped" >&2
    fi
  fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
