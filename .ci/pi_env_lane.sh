#!/usr/bin/env bash
# CI lane "pi env": reproduce the Raspberry Pi's Python environment on this Debian 12 machine
# and run the monitor from a real install of a bundle built from this checkout.
#
# Raspberry Pi OS Bookworm has Python 3.11 with numpy 1.24 and OpenCV 4.6 from apt, and the
# service's venv uses --system-site-packages; pip must never pull numpy 2 or an OpenCV wheel
# into it. This lane: checks shellcheck and the systemd unit, builds a bundle (`edge bundle`,
# with the build venv), installs it with deploy/install.sh into a temp prefix (no apt, no
# systemd, no system user), runs install.sh a second time (an upgrade keeps the config), and
# then, from THAT venv, asserts numpy 1.x and OpenCV 4.6 from apt, runs `edge doctor` and
# `edge run` on a short 640x480 video of skimage's astronaut and asserts a face was tracked.
# Before the install, .ci/pi_env_tests.sh runs edge's test files in such a venv.
#
# Usage:  bash .ci/pi_env_lane.sh [BUILD_VENV]        (default BUILD_VENV: .venv)
#   QM_LANE_MODEL=PATH   int8 .tflite (model.json beside it) to bundle instead of the shipped
#                        default model edge/models/default/model_int8.tflite
#   QM_LANE_FRAMES=N     frames for edge run (default 45)
#   QM_LANE_KEEP=1       keep the temp folder (its path is printed)
# Needs apt's python3-numpy python3-opencv python3-venv shellcheck, and for the tests opencv-data
# python3-matplotlib python3-skimage (installed when missing and running as root), PyPI for the
# pip steps, and the build venv's scikit-image.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BUILD_VENV=${1:-.venv}
[[ -x "$BUILD_VENV/bin/python" ]] || { echo "pi-env lane FAILED: no build venv at $BUILD_VENV (pass its path as the first argument)." >&2; exit 1; }
BPY="$(cd "$BUILD_VENV" && pwd)/bin/python"
MODEL=${QM_LANE_MODEL:-$REPO/edge/models/default/model_int8.tflite}
FRAMES=${QM_LANE_FRAMES:-45}
passed=0

step() { printf '\n== pi-env lane: %s\n' "$*"; }
fail() { printf '\npi-env lane FAILED: %s\n' "$*" >&2; exit 1; }
ok() { passed=$((passed + 1)); printf 'ok: %s\n' "$*"; }

[[ -f "$MODEL" ]] || fail "the model $MODEL is missing: ship edge/models/default/model_int8.tflite (+ model.json), or set QM_LANE_MODEL=PATH for a trial."
[[ -f "$(dirname "$MODEL")/model.json" ]] || fail "no model.json beside $MODEL."

step "apt packages of the Pi's Python environment"
wanted=(python3-numpy python3-opencv python3-venv shellcheck opencv-data python3-matplotlib python3-skimage)
missing=()
for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $EUID -eq 0 ]] || fail "missing apt packages ${missing[*]}; install them: sudo apt-get install ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
/usr/bin/python3 -I -c 'import numpy, cv2; print("apt: numpy", numpy.__version__, "OpenCV", cv2.__version__)'
ok "apt ${wanted[*]}"

step "shellcheck"
shellcheck deploy/install.sh deploy/check_aarch64_wheels.sh .ci/pi_env_lane.sh .ci/pi_env_tests.sh .ci/trixie_lane.sh
ok "shellcheck deploy/install.sh deploy/check_aarch64_wheels.sh .ci/pi_env_lane.sh .ci/pi_env_tests.sh .ci/trixie_lane.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qm-pi-lane.XXXXXX")
cleanup() {
    if [[ ${QM_LANE_KEEP:-0} == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

step "systemd unit"
"$BPY" -c '
import sys
from edge.ops.bundle import check_unit
problems = check_unit(open(sys.argv[1]).read())
sys.exit("; ".join(problems)) if problems else print("parse check: no problems")
' deploy/queue-mood.service
if command -v systemd-analyze >/dev/null; then
    # ExecStart must exist for verify: point it at a stub under the temp dir.
    mkdir -p "$TMP/verify/opt/queue-mood/venv/bin"
    printf '#!/bin/sh\nexit 0\n' > "$TMP/verify/opt/queue-mood/venv/bin/edge"
    chmod +x "$TMP/verify/opt/queue-mood/venv/bin/edge"
    sed "s|/opt/queue-mood/|$TMP/verify/opt/queue-mood/|g" deploy/queue-mood.service > "$TMP/verify/queue-mood.service"
    out=$(systemd-analyze verify "$TMP/verify/queue-mood.service" 2>&1) || fail "systemd-analyze verify: $out"
    [[ -z "$out" ]] || fail "systemd-analyze verify complained: $out"
    echo "systemd-analyze verify ($(systemd-analyze --version | head -1)): clean"
else
    echo "systemd-analyze not installed: the parse check above stands in for it"
fi
ok "deploy/queue-mood.service"

step "a 640x480 test video of skimage's astronaut ($FRAMES frames)"
VIDEO="$TMP/queue.avi"
"$BPY" .ci/astronaut_video.py "$VIDEO" "$FRAMES"
ok "test video"

step "edge bundle (build venv $BUILD_VENV, model $MODEL)"
cat > "$TMP/lane.toml" <<EOF
[source]
path = "$VIDEO"

[sinks.jsonl]
path = "/var/lib/queue-mood/alerts.jsonl"

[status]
port = 0
EOF
"$BPY" -m edge.cli bundle --model "$MODEL" --config "$TMP/lane.toml" --out "$TMP/queue-mood-bundle.tar.gz" \
    || fail "edge bundle failed"
mkdir "$TMP/unpacked"
tar xzf "$TMP/queue-mood-bundle.tar.gz" -C "$TMP/unpacked"
ok "bundle $(du -h "$TMP/queue-mood-bundle.tar.gz" | cut -f1)"

# Before the exports below: the tests of install.sh must not see this lane's PREFIX and QM_*.
step "edge's test files in a venv like the Pi's (.ci/pi_env_tests.sh)"
bash .ci/pi_env_tests.sh || fail "edge's tests fail in the Pi's Python environment (see above)."
ok "edge's tests with apt's numpy and OpenCV"

ROOT="$TMP/root"
export PREFIX="$ROOT/opt/queue-mood" ETC_DIR="$ROOT/etc/queue-mood" STATE_DIR="$ROOT/var/lib/queue-mood"
export UNIT_DIR="$ROOT/etc/systemd/system" QM_SKIP_APT=1 QM_NO_SERVICE=1 QM_SYSTEM_USER=0
V="$PREFIX/venv/bin"
CONFIG="$ETC_DIR/config.toml"

step "install.sh into $ROOT (CI overrides: no apt, no systemd, no system user)"
bash "$TMP/unpacked/queue-mood-bundle/install.sh"
[[ -x "$V/edge" && -f "$CONFIG" && -f "$UNIT_DIR/queue-mood.service" && -d "$STATE_DIR/spool" ]] \
    || fail "install.sh did not install the venv, config, unit and spool folder"
grep -q "^path = \"$PREFIX/model/model_int8.tflite\"" "$CONFIG" || fail "the installed config does not point at $PREFIX/model"
ok "install.sh (first run)"

step "install.sh again (an upgrade keeps the config)"
echo "# kept-by-upgrade" >> "$CONFIG"
QM_DOCTOR=0 bash "$TMP/unpacked/queue-mood-bundle/install.sh" > "$TMP/install2.log" 2>&1 \
    || { cat "$TMP/install2.log"; fail "install.sh failed when run a second time"; }
grep -q kept-by-upgrade "$CONFIG" || fail "the second install.sh replaced $CONFIG"
[[ -f "$CONFIG.bundle" ]] || fail "the second install.sh did not put the new config beside the old one"
ok "install.sh (second run): config kept"

step "install.sh stops an upgrade whose kept config this version refuses, before changing anything"
cp "$CONFIG" "$TMP/config.kept"
{ echo "bogus_key = 1"; cat "$TMP/config.kept"; } > "$CONFIG"  # the wheel, imported from its zip by apt's Python, reads it
if QM_DOCTOR=0 bash "$TMP/unpacked/queue-mood-bundle/install.sh" > "$TMP/install3.log" 2>&1; then
    cat "$TMP/install3.log"; fail "install.sh installed over a kept config this version refuses"
fi
if ! grep -q "does not load with this version: Unknown config key 'bogus_key'.*Nothing was changed" "$TMP/install3.log" \
        || grep -q "== venv" "$TMP/install3.log"; then
    cat "$TMP/install3.log"; fail "install.sh did not refuse the kept config before the venv"
fi
cp "$TMP/config.kept" "$CONFIG"
ok "install.sh (third run): refused the kept config before changing anything"

cd "$TMP"  # nothing from the checkout may shadow the installed package from here on
step "the installed venv uses apt's numpy 1.x and OpenCV 4.6, and no OpenCV wheel"
"$V/python" -I - "$PREFIX/venv" <<'EOF'
import sys
from importlib import metadata

import cv2
import numpy

import edge

print(f"numpy {numpy.__version__} ({numpy.__file__})\nOpenCV {cv2.__version__} ({cv2.__file__})\nedge {edge.__file__}")
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__} is not 1.x"
assert numpy.__file__.startswith("/usr/lib/python3/dist-packages/"), "numpy is not apt's"
assert cv2.__version__.startswith("4.6"), f"OpenCV {cv2.__version__} is not apt's 4.6"
wheels = [d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("opencv")]
assert not wheels, f"an OpenCV wheel is installed: {wheels}"
assert edge.__file__.startswith(sys.argv[1]), "edge is not imported from the installed wheel"
import ai_edge_litert
print("ai-edge-litert", metadata.version("ai-edge-litert"))
EOF
ok "numpy 1.x and OpenCV 4.6 from apt in the venv"

step "edge doctor --config $CONFIG"
"$V/edge" doctor --config "$CONFIG" || fail "edge doctor reported a FAIL"
"$V/edge" doctor --config "$CONFIG" --json > "$TMP/doctor.json" 2>/dev/null || fail "edge doctor --json failed"
"$V/python" -I - "$TMP/doctor.json" <<'EOF'
import json, sys
checks = {c["name"]: c["status"] for c in json.load(open(sys.argv[1]))["checks"]}
for name in ("tflite runtime", "numpy", "opencv", "config", "model", "detector"):
    assert checks.get(name) == "OK", f"doctor: {name} is {checks.get(name)}"
print("doctor --json: runtime, numpy, opencv, config, model, detector OK")
EOF
ok "edge doctor"

step "edge run --source $VIDEO --max-frames $FRAMES"
"$V/edge" run --config "$CONFIG" --source "$VIDEO" --max-frames "$FRAMES" --json > "$TMP/run.json" \
    || fail "edge run failed"
"$BPY" "$REPO/.ci/tracked.py" "$TMP/run.json" "$FRAMES" || fail "edge run did not track the face through every frame"
ok "edge run tracked the face"

printf '\npi-env: %d passed, 0 failed\n' "$passed"
