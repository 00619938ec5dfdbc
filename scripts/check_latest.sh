#!/usr/bin/env bash
# Does the newest of everything pyproject.toml allows still pass? A throwaway virtualenv, unpinned
# (the lock is ignored), then the unit tests. Run it before refreshing the lock (scripts/lock.sh).
#   scripts/check_latest.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/tts-latest-XXXXXX)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
"${PYTHON:-python3.11}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q ".[cpu,dev]"
"$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$venv/bin/python" -m pip freeze > "$(dirname "$venv")/resolved.txt"
diff <(grep '==' requirements-cpu.lock | tr 'A-Z_' 'a-z-' | sort) \
     <(tr 'A-Z_' 'a-z-' < "$(dirname "$venv")/resolved.txt" | sort) | grep '^[<>]' || echo "latest = lock"
"$venv/bin/python" -m pytest -q -m "not integration" -p no:cacheprovider "$@"
