#!/usr/bin/env bash
# Service overhead: HTTP requests/s and p50/p99 through the ClusterIP, the LoadBalancer and the
# NodePort of skiff-proxy vs straight to the backend on 127.0.0.2, load from wrk (keep-alive and
# a new connection per request). Everything stays on this machine (loopback and the proxy's own
# interface). Needs root and wrk.
# Runs once per proxy mode (MODES, default "iptables userspace": kernel DNAT rules, then the
# userspace proxy).
# Usage: bench/proxy/run.sh [DURATION_SECS] [CONNECTIONS,...]   (PROFILE=dev for a debug build)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE="${PROFILE:-release}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  commit: $(git rev-parse --short HEAD)  profile: $PROFILE"
if [ "$PROFILE" = release ]; then
  cargo build --release -p skiff-proxy --example proxy_bench
else
  cargo build -p skiff-proxy --example proxy_bench
fi
DIR="$PROFILE"; [ "$PROFILE" = dev ] && DIR=debug
for mode in ${MODES:-iptables userspace}; do
  "${CARGO_TARGET_DIR:-target}/$DIR/examples/proxy_bench" "${1:-5}" "${2:-1,16,64}" "$mode"
done
