#!/usr/bin/env bash
# One command to install and start LLM Workbench on this machine with embedded defaults:
# SQLite, an embedded Redis and one local worker. Extra arguments go to `workbench serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/workbench serve "$@"
