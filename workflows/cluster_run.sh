#!/usr/bin/env bash
# Run configs/sobel.yaml on a Dask cluster on this machine: one `dask scheduler` and
# two `dask worker`s on 127.0.0.1, `convpipe run --scheduler tcp://...`, a look at the
# output, and everything torn down on exit (also on error or Ctrl-C).
#
# usage: workflows/cluster_run.sh [OUTPUT.zarr]
#
#   OUTPUT.zarr  where to write the result (replaced if it exists); default: a
#                temporary folder, removed at the end.
#
# `python`, `dask` and `convpipe` come from PATH (activate the project's virtualenv
# first) unless $PYTHON, $DASK or $CONVPIPE say otherwise. $CLUSTER_TIMEOUT bounds,
# in seconds, the wait for the scheduler and for each worker (default 60).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
DASK="${DASK:-dask}"
CONVPIPE="${CONVPIPE:-convpipe}"
TIMEOUT="${CLUSTER_TIMEOUT:-60}"
WORKERS=2

WORK="$(mktemp -d "${TMPDIR:-/tmp}/convpipe-cluster.XXXXXX")"
OUTPUT="${1:-$WORK/sobel.zarr}"
export TMPDIR="$WORK"  # Dask's scratch space (dask-scratch-space/) goes there too, and is removed with it
PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Workers first, then the scheduler (a worker whose scheduler is already gone takes seconds
    # to give up); each gets up to 10 s for a clean shutdown, then SIGKILL.
    for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do
        local pid="${PIDS[$k]}"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$WORK"/*.log; do
            [ -f "$log" ] && { echo "--- $(basename "$log") (last lines)" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for LOG TEXT PID: until TEXT appears in LOG; fail if PID exits or after $TIMEOUT s.
wait_for() {
    local deadline=$((SECONDS + TIMEOUT))
    until grep -q "$2" "$1" 2>/dev/null; do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "error: $(basename "$1" .log) exited before it was ready" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "error: $(basename "$1" .log) not ready after $TIMEOUT s" >&2
            return 1
        fi
        sleep 0.1
    done
}

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADDRESS="tcp://127.0.0.1:$PORT"

# Without a dashboard the scheduler still serves HTTP, by default on 8787: take any free port.
"$DASK" scheduler --host 127.0.0.1 --port "$PORT" --no-dashboard --dashboard-address 127.0.0.1:0 \
    >"$WORK/scheduler.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/scheduler.log" "Scheduler at:" "${PIDS[0]}"
echo "scheduler at $ADDRESS" >&2

for i in $(seq "$WORKERS"); do
    "$DASK" worker "$ADDRESS" --host 127.0.0.1 --name "worker-$i" --nthreads 1 --no-dashboard \
        --local-directory "$WORK/worker-$i" >"$WORK/worker-$i.log" 2>&1 &
    PIDS+=($!)
done
for i in $(seq "$WORKERS"); do
    wait_for "$WORK/worker-$i.log" "Registered to:" "${PIDS[$i]}"
done
echo "$WORKERS workers registered" >&2

# configs/sobel.yaml names its input relative to its own folder (../data/sample.zarr):
# write a copy with absolute input and output paths.
CONFIG="$WORK/sobel.yaml"
"$PYTHON" - "$REPO/configs/sobel.yaml" "$CONFIG" "$OUTPUT" <<'EOF'
import sys
from pathlib import Path

import yaml

source, target, output = map(Path, sys.argv[1:])
config = yaml.safe_load(source.read_text(encoding="utf-8"))
if "://" not in config["input"]["path"]:
    config["input"]["path"] = str((source.resolve().parent / config["input"]["path"]).resolve())
config["output"]["path"] = str(output.resolve())
target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
EOF

"$CONVPIPE" run "$CONFIG" --scheduler "$ADDRESS" --overwrite

"$CONVPIPE" inspect "$OUTPUT"
"$PYTHON" - "$OUTPUT" <<'EOF'
import sys

import zarr

record = zarr.open_group(sys.argv[1], mode="r")["0"].attrs["convpipe"]
if not record.get("complete"):
    sys.exit(f"error: {sys.argv[1]} is not marked complete")
EOF
