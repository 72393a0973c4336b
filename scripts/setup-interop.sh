#!/usr/bin/env bash
# Installs the real WebRTC peers the transport interop tests drive (idempotent):
#   - aiortc (PyPI) in a virtualenv at target/interop-venv, used by
#     crates/media/tests/transport_interop_aiortc.rs as a scripted WHIP sender;
#   - Debian's chromium, used headless with a fake audio capture by
#     crates/media/tests/transport_interop_chromium.rs.
# The tests find the peers at these fixed places; a peer that is missing makes its test FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/interop-venv"
if ! "$venv/bin/python" -c "import aiortc, numpy" >/dev/null 2>&1; then
  echo "setup-interop: creating $venv with aiortc"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "aiortc>=1.9,<2" "aiohttp>=3.9,<4" numpy
fi
echo "setup-interop: aiortc present ($("$venv/bin/python" -c 'import aiortc; print(aiortc.__version__)'))"

if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "setup-interop: installing chromium"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
echo "setup-interop: chromium present ($(chromium --version 2>/dev/null || echo unknown))"
