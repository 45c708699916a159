#!/usr/bin/env bash
# Scheduler throughput: 1,000 simulated nodes, 10,000 pending pods, in-process API server,
# release build. Usage: bench/scheduler/run.sh [NODES] [PODS] [--no-events]
set -euo pipefail
cd "$(dirname "$0")/../.."
NODES="${1:-1000}"
PODS="${2:-10000}"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  commit: $(git rev-parse --short HEAD)"
echo "machine: $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -p skiff-scheduler --example scheduler_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/scheduler_bench"
/usr/bin/time -v "$BIN" "$NODES" "$PODS" "${@:3}" 2> >(grep -E 'Maximum resident|Elapsed' >&2)
