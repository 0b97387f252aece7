#!/usr/bin/env bash
# Set up robcurve in ./.venv (Python 3.11): the package with its test extras, the peer
# libraries used for cross-checks, and (where apt is available as root) the full
# Fashion-MNIST dataset. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade "pip>=24" >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
# torchattacks 3.5.1 pins requests~=2.25.1, which would pull idna 2.10 under
# huggingface_hub's idna>=3 (timm's hub client). robcurve uses torchattacks only as a
# cross-check backend and none of its download code, so it goes in without its pins.
.venv/bin/python -m pip install -q --no-deps "torchattacks==3.5.1"
# The full Fashion-MNIST (MIT) for zoo training and full-split evaluation; the main job
# and the tests also run without it (an embedded subset ships with robcurve).
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || echo "note: could not install dataset-fashion-mnist; using the embedded subset"
fi
# A headless browser for the leaderboard page test (tests/test_leaderboard.py): Debian's
# Chromium and its driver, where apt is available as root; the test is skipped without them.
if ! command -v chromedriver >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || echo "note: could not install chromium; the browser test will be skipped"
fi
.venv/bin/robcurve --help >/dev/null
echo "robcurve installed in .venv"
