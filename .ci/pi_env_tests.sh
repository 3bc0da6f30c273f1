#!/usr/bin/env bash
# CI: the tests of edge/ in the Raspberry Pi's Python environment. The other test runs use pip's
# numpy 2 and OpenCV wheels; a Pi has apt's numpy 1.24 and OpenCV 4.6, which differ (OpenCV 4.6
# takes no Path as a file name; numpy 1 promotes scalars by value). Called by .ci/pi_env_lane.sh.
#
# The venv is made as install.sh makes a Pi's (--system-site-packages on apt's Python 3.11);
# apt also gives what the tests and `edge demo` take from it on a Pi (opencv-data for the Haar
# detector, python3-matplotlib, python3-skimage), and pip adds only this checkout (editable,
# extras edge, mqtt, gpio) and pytest with pytest-xdist, under install.sh's constraints with numpy pinned to apt's.
# Left out: the build machine's test files (train/, convert/, benchmarks/), which need TensorFlow,
# and those whose subject runs off the Pi: the status page's JavaScript in a browser (test_webpage)
# and head office's Prometheus and Alertmanager config (test_fleet). The build venv runs them; the
# Pi's side of both (/status, /history, /metrics from a live server) is test_status's, run here.
#
# Usage:  bash .ci/pi_env_tests.sh [VENV]     (default: a temp venv, removed at the end; a VENV
#                                              that exists is reused, for a quick rerun)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BUILD_MACHINE_TESTS=(test_augment test_benchmarks test_convert test_data test_soup test_teacher test_train test_votes)
OFF_PI_TESTS=(test_fleet test_webpage)
APT_PACKAGES=(python3-numpy python3-opencv python3-venv opencv-data python3-matplotlib python3-skimage)

step() { printf '\n== pi-env tests: %s\n' "$*"; }
fail() { printf '\npi-env tests FAILED: %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok: %s\n' "$*"; }

step "apt packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] || fail "missing apt packages ${missing[*]}; install them: sudo apt-get install ${missing[*]}"
ok "${APT_PACKAGES[*]}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qm-pi-tests.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
VENV=${1:-$WORK/venv}

step "venv $VENV"
[[ -x "$VENV/bin/python" ]] || /usr/bin/python3 -m venv --system-site-packages "$VENV" \
    || fail "/usr/bin/python3 could not make the venv $VENV."
apt_numpy=$(/usr/bin/python3 -I -c 'import numpy; print(numpy.__version__)')
# install.sh's constraints, and numpy pinned: a wheel of numpy 1.26 would also satisfy numpy<2.
cat > "$WORK/constraints.txt" <<EOF
numpy==$apt_numpy
opencv-python<0
opencv-python-headless<0
opencv-contrib-python<0
opencv-contrib-python-headless<0
EOF
"$VENV/bin/python" -m pip --disable-pip-version-check --no-input install -q --root-user-action=ignore \
    -c "$WORK/constraints.txt" -e "${REPO}[edge,mqtt,gpio]" 'pytest>=7' 'pytest-xdist>=3' \
    || fail "pip could not install this checkout with its edge, mqtt and gpio extras, pytest and pytest-xdist into $VENV (see above)."
(cd / && "$VENV/bin/python" -I - <<'EOF'
import sys
from importlib import metadata

import cv2
import matplotlib
import numpy
import skimage

print(f"numpy {numpy.__version__}, OpenCV {cv2.__version__}, matplotlib {matplotlib.__version__}, "
      f"scikit-image {skimage.__version__}")
for module in (numpy, cv2, matplotlib, skimage):
    assert module.__file__.startswith("/usr/lib/python3/dist-packages/"), f"{module.__name__} is not apt's"
# In the venv only: Trixie's python3-opencv has metadata of its own ("opencv") in apt's folder.
wheels = [d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("opencv")
          and str(d.locate_file("")).startswith(sys.prefix + "/")]
assert not wheels, f"an OpenCV wheel is installed: {wheels}"
EOF
) || fail "the venv $VENV does not take numpy, OpenCV, matplotlib and scikit-image from apt (see above)."
ok "numpy, OpenCV, matplotlib and scikit-image from apt; edge from $REPO"

step "pytest: edge's test files"
files=()
for f in tests/test_*.py; do
    [[ " ${BUILD_MACHINE_TESTS[*]} ${OFF_PI_TESTS[*]} " == *" $(basename "$f" .py) "* ]] || files+=("$f")
done
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "slow or not slow" "${files[@]}" \
    || fail "edge's tests fail with apt's numpy and OpenCV (see above); rerun them with: bash .ci/pi_env_tests.sh VENV"
ok "${#files[@]} test files"
