#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install the package with every extra plus the dev and
# bench dependency groups. Idempotent; `make` reruns it only when pyproject.toml changes.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# Dependency groups (PEP 735) need pip >= 25.1.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25.1'
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -e '.[all]' --group dev --group bench
