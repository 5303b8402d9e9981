#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh example   set up .venv (no extras) and run the built-in example: train a small CNN, compress it
#                      to 1.5x its speed for host (measured) and raspberry-pi-4 (predicted)
#   ./run.sh test      set up .venv with the development extras and run the test suite
# torch is pinned through constraints.txt: unpinned, pip resolves a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

setup() {
    local extras=$1
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt torch
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".$extras"
}

case "${1:-}" in
    example)
        shift
        setup ""
        exec "$VENV/bin/compress" example "$@"
        ;;
    test)
        shift
        setup "[dev]"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./run.sh example [--out DIR] | ./run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
