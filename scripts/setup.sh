#!/usr/bin/env bash
# Installs what skiff's build, tests and benchmarks need on a fresh Debian machine, only
# when missing: Debian packages (apt-get) and a Python venv at .venv (pip).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(curl ca-certificates iproute2 busybox-static runc containernetworking-plugins iptables docker-registry skopeo apache2-utils)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

for tool in cargo kubectl python3; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is required on the PATH" >&2; exit 1; }
done
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# Python venv for the client tests (and the model-server tests): reinstall only when the
# requirements change.
REQ=scripts/requirements.txt
STAMP=.venv/.requirements.sha256
shopt -s nullglob
REQ_FILES=("$REQ" crates/*/requirements.txt)
want=$(cat "${REQ_FILES[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: preparing the Python venv (.venv)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  reqs=()
  for r in "${REQ_FILES[@]}"; do reqs+=(-r "$r"); done
  .venv/bin/pip install -q --disable-pip-version-check "${reqs[@]}"
  echo "$want" > "$STAMP"
fi
