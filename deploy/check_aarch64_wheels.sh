#!/usr/bin/env bash
# Do the Pi's pip dependencies exist as binary wheels for Raspberry Pi OS 64-bit: Bookworm
# (aarch64, glibc 2.36, CPython 3.11, apt's numpy 1.24) or Trixie (glibc 2.41, CPython 3.13, numpy 2.2)?
#
#   bash deploy/check_aarch64_wheels.sh [PYTHON]      (default: .venv/bin/python, else python3)
#   QM_DEBIAN=trixie bash deploy/check_aarch64_wheels.sh    (default: bookworm)
#
# 1. each base requirement and each of the `edge`, `mqtt` and `gpio` extras in pyproject.toml, plus
#    numpy as apt has it, downloaded alone (--no-deps) as an aarch64 wheel;
# 2. the same requirements resolved WITH their dependencies under the Pi's constraints
#    (apt's numpy, no OpenCV wheel), so a transitive dependency without an aarch64 wheel, or one
#    that needs another numpy, shows up too.
# Nothing is installed; the wheels go to a temp folder that is removed at the end.
# Exit code 1 when a step finds no wheel.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${1:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
# pip matches --platform tags exactly (it does not widen manylinux_2_28 to the older glibc
# versions, nor manylinux2014 to its alias manylinux_2_17), so list every tag a real aarch64 pip
# accepts: manylinux2014 and manylinux_2_17 ... manylinux_2_36 on Bookworm (..._2_41 on Trixie).
case ${QM_DEBIAN:-bookworm} in
    # apt's numpy, pinned exactly as install.sh pins it on the Pi (numpy<2 would resolve with 1.26)
    bookworm) PYVER=3.11 GLIBC=36 NUMPY='numpy==1.24.2' ;;
    trixie) PYVER=3.13 GLIBC=41 NUMPY='numpy==2.2.4' ;;
    *) echo "QM_DEBIAN must be bookworm or trixie, not ${QM_DEBIAN}" >&2; exit 2 ;;
esac
PLATFORMS=(--platform manylinux2014_aarch64)
for glibc in $(seq "$GLIBC" -1 17); do
    PLATFORMS+=(--platform "manylinux_2_${glibc}_aarch64")
done
TARGET=(--only-binary=:all: "${PLATFORMS[@]}" --python-version "$PYVER" --implementation cp)

mapfile -t REQS < <("$PY" - "$NUMPY" <<'EOF'
import sys
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
for req in project["dependencies"]:  # the project's own requirements install on the Pi too
    print(req)
for name in ("edge", "mqtt", "gpio"):
    for req in extras[name]:
        print(req)
print(sys.argv[1])  # apt's numpy, as pip must find it
EOF
)

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
printf '%s\nopencv-python<0\nopencv-python-headless<0\nopencv-contrib-python<0\nopencv-contrib-python-headless<0\n' \
    "$NUMPY" > "$TMP/constraints.txt"

pip_download() {
    "$PY" -m pip --disable-pip-version-check download --no-cache-dir -q "${TARGET[@]}" "$@"
}

status=0
echo "== 1. each requirement alone (--no-deps), aarch64 / cp${PYVER/./} / manylinux up to glibc 2.$GLIBC"
for req in "${REQS[@]}"; do
    dest="$TMP/alone/$(printf '%s' "$req" | tr -c 'A-Za-z0-9' '_')"
    if pip_download --no-deps -d "$dest" "$req" >"$TMP/log" 2>&1; then
        printf 'OK    %-22s %s\n' "$req" "$(cd "$dest" && ls)"
    else
        printf 'FAIL  %-22s %s\n' "$req" "$(grep -m1 -E 'ERROR' "$TMP/log" || tail -n1 "$TMP/log")"
        status=1
    fi
done

echo
echo "== 2. all of them with their dependencies, under $NUMPY and no OpenCV wheel"
if pip_download -c "$TMP/constraints.txt" -d "$TMP/all" "${REQS[@]}" >"$TMP/log" 2>&1; then
    for f in "$TMP"/all/*; do printf 'OK    %s\n' "$(basename "$f")"; done
else
    sed 's/^/      /' "$TMP/log" | tail -n 15
    echo "FAIL  the dependency tree does not resolve to aarch64 wheels with $NUMPY"
    status=1
fi
exit "$status"
