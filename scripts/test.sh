#!/usr/bin/env bash
# One command to install everything and run the whole test suite (unit, integration with a real
# Celery worker over real Redis on SQLite and PostgreSQL, and the browser end-to-end test).
# The tests start the machine's PostgreSQL and Redis themselves if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@"
