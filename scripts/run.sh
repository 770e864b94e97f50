#!/usr/bin/env bash
# One command to install and start LLM Workbench on this machine with embedded defaults:
# SQLite, an embedded Redis and one local worker. Extra arguments go to `workbench serve`.
#
# It says what it is doing at each step (setup.sh names its own: the virtual environment, torch, the
# app), passes the server's output through as it comes, and once the app answers prints one block with
# its address and, on the first start, the admin password. Ctrl-C (or SIGTERM) stops the server
# cleanly: it is forwarded as SIGTERM, and this script waits until the server has stopped its worker
# and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

READY_TIMEOUT_S="${WORKBENCH_READY_TIMEOUT_S:-300}"
say() { printf '==> %s\n' "$*"; }

say "setting up the Python environment in .venv (scripts/setup.sh; the first run downloads and installs" \
    "torch and the app, which takes a few minutes)"
bash scripts/setup.sh

say "starting LLM Workbench (workbench serve${*:+ $*}): migrating the database, creating the admin user" \
    "on the first start, starting Redis and a local worker"

# Prints the block that tells people where to go, once `url` answers (or says that it does not).
banner_when_ready() {
    local url="$1" password="$2" server_pid="$3" waited=0 health="${1%/}/api/health"
    until .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
            "$health" 2>/dev/null; do
        kill -0 "$server_pid" 2>/dev/null || return 0  # stopped before it was ready: its log says why
        if (( waited >= READY_TIMEOUT_S )); then
            say "the app does not answer at $url after ${READY_TIMEOUT_S} s; see the messages above"
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    local open_url="${url/\/\/0.0.0.0:/\/\/localhost:}"
    local login
    if [[ -n "$password" ]]; then
        login="Log in as: admin   password: $password
   (created now and shown only this once: keep it somewhere safe)"
    elif [[ -n "${WORKBENCH_ADMIN_PASSWORD:-}" ]]; then
        login="Log in as: admin   password: the one in WORKBENCH_ADMIN_PASSWORD"
    else
        login="Log in as: admin   password: the one shown at the first start (this data directory has users)"
    fi
    printf '\n%s\n' "-------------------------------------------------------------------------------"
    printf ' LLM Workbench is ready: %s\n' "$open_url"
    printf ' %s\n' "$login"
    printf ' API docs: %s/docs     Stop: Ctrl-C\n' "${open_url%/}"
    printf '%s\n\n' "-------------------------------------------------------------------------------"
}

# Passes the server's output through and picks out the admin password and the address it prints.
announce() {
    local server_pid="$1" line password="" url
    while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
            "admin password: "*) password="${line#admin password: }" ;;
            "LLM Workbench on http"*)
                url="${line#LLM Workbench on }"
                banner_when_ready "${url%% *}" "$password" "$server_pid" &
                ;;
        esac
    done
    wait  # the banner, if it is still waiting
}

fifo_dir="$(mktemp -d)"
trap 'rm -rf "$fifo_dir"' EXIT
mkfifo -m 600 "$fifo_dir/output"

# In the background, so this script can forward Ctrl-C as SIGTERM (background commands ignore SIGINT).
PYTHONUNBUFFERED=1 .venv/bin/workbench serve "$@" >"$fifo_dir/output" 2>&1 &
server_pid=$!
announce "$server_pid" <"$fifo_dir/output" &
announce_pid=$!

stop_server() {
    say "stopping LLM Workbench (its worker and Redis stop with it)"
    kill -TERM "$server_pid" 2>/dev/null || true
}
trap stop_server INT TERM HUP

status=0
while true; do
    wait "$server_pid" && status=0 || status=$?  # a trap interrupts the wait: wait again until it has stopped
    kill -0 "$server_pid" 2>/dev/null || break
done
wait "$announce_pid" 2>/dev/null || true
exit "$status"
