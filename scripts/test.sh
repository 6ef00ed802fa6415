#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs the whole suite twice:
# once on the Cython twins and once on the pure-Python twins (NBA_PURE_PYTHON=1).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Install the package editable with what the tests need, once per change of pyproject.toml or
# setup.py. NBA_NO_CYTHON: the editable install builds no extension (it would compile every
# module in a temporary folder, each run); the in-place build below does, incrementally.
stamp=$(cat pyproject.toml setup.py | sha1sum | cut -c1-40)
if [ "$(cat .venv/.nba-installed 2>/dev/null)" != "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 'setuptools>=77'  # pyproject.toml's license needs 77
  NBA_NO_CYTHON=1 .venv/bin/python -m pip install -q -e '.[test]'
  echo "$stamp" > .venv/.nba-installed
fi
# (re)build the Cython extensions in place: those whose sources changed since the last build
if ! .venv/bin/python setup.py -q build_ext --inplace -j 2 > .venv/build_ext.log 2>&1; then
  cat .venv/build_ext.log
  echo "the Cython build failed (its output is above)" >&2
  exit 1
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (the Redis tests start their own servers on free ports)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# the socket's TLS tests make their certificates with openssl; its backlog test reads the
# listen queue with ss (iproute2)
for tool in openssl:openssl ss:iproute2; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${tool##*:}" >/dev/null
  fi
done

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (tests/test_report.py opens the replay report in a real browser)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    || echo "chromium could not be installed: the browser test of the report will be skipped" >&2
fi

# The VS Code grammar's test runs VS Code's TextMate engine on node (tests/test_vscode_grammar.py)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm (the VS Code grammar's test runs on node)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm >/dev/null \
    || echo "could not install nodejs and npm: the VS Code grammar's test will be skipped" >&2
fi
if command -v npm >/dev/null 2>&1; then
  (cd editors/vscode/test && npm ci --no-audit --no-fund --silent)
fi

.venv/bin/python -c 'import nba.dsl.twins as t; assert t.IMPLEMENTATION == "cython", "the Cython twins did not build"'
echo "== house rules (ruff format --check, ruff check)"
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
echo "== the documentation (mkdocs build --strict: a broken link fails)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
echo "== tests on the Cython twins"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
echo "== tests on the pure-Python twins"
NBA_PURE_PYTHON=1 .venv/bin/python -m pytest -p no:cacheprovider "$@"
