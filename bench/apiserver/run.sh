#!/usr/bin/env bash
# Control-plane benchmark: builds release `skiff` and `skiff-bench`, runs every measurement
# against `skiff up` on 127.0.0.1 and prints the results table (about 2-3 minutes).
# Extra arguments go to skiff-bench (e.g. `--only create,get` or `--objects 2000`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"

cargo build --release --locked -p skiff -p skiff-bench

out="$CARGO_TARGET_DIR/bench-apiserver.md"
{
  echo "# skiff control-plane benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)$( [ -r /proc/pressure/cpu ] && echo "; CPU pressure (some, avg60): $(awk '/^some/ {sub("avg60=","",$3); print $3}' /proc/pressure/cpu)%")"
  echo "- command: bench/apiserver/run.sh $*"
  echo
  "$CARGO_TARGET_DIR/release/skiff-bench" --skiff "$CARGO_TARGET_DIR/release/skiff" "$@"
} | tee "$out"
echo "(saved to $out)" >&2
