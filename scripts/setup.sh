#!/usr/bin/env bash
# Installs the system packages mediabot's build and tests need on a fresh Debian machine.
# Idempotent: anything already present is left alone. Runs as root or through sudo.
#
#   cmake      builds the bundled libopus (the `opus` crate) and aws-lc (rustls' crypto provider)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)

if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "setup: system packages present"

# Real WebRTC peers for the transport interop tests (aiortc, headless Chromium, ...).
if [ -f scripts/setup-interop.sh ]; then
  bash scripts/setup-interop.sh
fi
