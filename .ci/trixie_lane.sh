#!/usr/bin/env bash
# Lane "trixie": install a bundle built from this checkout on Debian 13 Trixie, the base of
# Raspberry Pi OS since October 2025 (Raspberry Pi Imager's default "Raspberry Pi OS Lite
# (64-bit)"): Python 3.13 with apt's numpy 2.x and OpenCV 4.10, not Bookworm's 3.11, 1.24 and 4.6.
#
#   sudo bash .ci/trixie_lane.sh [BUILD_VENV] [ROOTFS]   (defaults: .venv, /srv/trixie)
#
# ROOTFS is a Trixie root (with python3, as Raspberry Pi OS Lite has) made with debootstrap when
# missing (about 400 MB from deb.debian.org, minutes): not part of .ci/run for that reason; run it
# before a release. Inside it, as on a
# fresh Pi: install.sh with apt (picamera2 and lgpio are Raspberry Pi OS packages, absent from
# Debian: skipped as on any Debian), a system user, no systemd (QM_NO_SERVICE=1); then the venv's
# numpy and OpenCV must be apt's, `edge doctor` must pass, and `edge run` on a test video of
# skimage's astronaut must track her; last, edge's test files run there (.ci/pi_env_tests.sh).
# The host's CA certificates go into the root for pip.
# Needs root, debootstrap, and the build venv's scikit-image.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_VENV=${1:-.venv}
ROOTFS=${2:-/srv/trixie}
FRAMES=45
passed=0

step() { printf '\n== trixie lane: %s\n' "$*"; }
fail() { printf '\ntrixie lane FAILED: %s\n' "$*" >&2; exit 1; }
ok() { passed=$((passed + 1)); printf 'ok: %s\n' "$*"; }

[[ $EUID -eq 0 ]] || fail "run it as root (debootstrap, chroot): sudo bash $0"
[[ -x "$BUILD_VENV/bin/python" ]] || fail "no build venv at $BUILD_VENV (pass its path as the first argument)."
BPY="$(cd "$BUILD_VENV" && pwd)/bin/python"

step "Debian 13 Trixie root at $ROOTFS"
if [[ ! -x "$ROOTFS/usr/bin/python3" ]]; then
    command -v debootstrap >/dev/null || fail "debootstrap is missing: apt-get install debootstrap"
    debootstrap --variant=minbase --include=ca-certificates,python3 trixie "$ROOTFS" http://deb.debian.org/debian \
        || fail "debootstrap trixie $ROOTFS failed (see above)"
fi
grep -q '^VERSION_CODENAME=trixie' "$ROOTFS/etc/os-release" || fail "$ROOTFS is not Debian Trixie"
rm -rf "$ROOTFS/etc/queue-mood" "$ROOTFS/opt/queue-mood" "$ROOTFS/var/lib/queue-mood"  # an earlier run's: a fresh Pi
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/usr/local/share/host-ca.crt"
MOUNTED=""  # /proc is unmounted at the end only if this run mounted it (another run may use it)
mountpoint -q "$ROOTFS/proc" || { mount -t proc proc "$ROOTFS/proc" && MOUNTED=1; }
WORK=$(mktemp -d "$ROOTFS/tmp/qm-trixie.XXXXXX")
IN=${WORK#"$ROOTFS"}  # the same folder seen from inside the root
cleanup() { rm -rf "$WORK"; [ -z "$MOUNTED" ] || umount "$ROOTFS/proc" 2>/dev/null || true; }
trap cleanup EXIT
in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    PIP_CERT=/usr/local/share/host-ca.crt "$@"; }
ok "trixie root"

step "a test video and a bundle built from this checkout"
"$BPY" .ci/astronaut_video.py "$WORK/queue.avi" "$FRAMES"
cat > "$WORK/lane.toml" <<EOF
[source]
path = "$IN/queue.avi"

[status]
port = 0
EOF
"$BPY" -m edge.cli bundle --model edge/models/default/model_int8.tflite --config "$WORK/lane.toml" \
    --out "$WORK/queue-mood-bundle.tar.gz" || fail "edge bundle failed"
tar xzf "$WORK/queue-mood-bundle.tar.gz" -C "$WORK"
ok "bundle"

step "install.sh as on a fresh Pi (apt, system user; no systemd in a chroot)"
in_root QM_NO_SERVICE=1 bash "$IN/queue-mood-bundle/install.sh" || fail "install.sh failed on Trixie (see above)"
ok "install.sh"

V=/opt/queue-mood/venv/bin
step "the venv's Python, numpy and OpenCV are Trixie's"
in_root "$V/python" -I - <<'EOF' || fail "the venv does not use Trixie's Python, numpy and OpenCV (see above)"
import sys
from importlib import metadata

import cv2
import numpy

import edge

print(f"Python {sys.version.split()[0]}, numpy {numpy.__version__} ({numpy.__file__}), OpenCV {cv2.__version__}")
assert sys.version_info[:2] >= (3, 13), "not Trixie's Python"
assert numpy.__file__.startswith("/usr/lib/python3/dist-packages/"), "numpy is not apt's"
assert cv2.__file__.startswith("/usr/lib/python3/dist-packages/"), "OpenCV is not apt's"
assert edge.__file__.startswith("/opt/queue-mood/venv/"), "edge is not the installed wheel"
print("ai-edge-litert", metadata.version("ai-edge-litert"))
EOF
ok "Python 3.13, numpy and OpenCV from apt"

step "edge doctor"
in_root "$V/edge" doctor --config /etc/queue-mood/config.toml || fail "edge doctor reported a FAIL"
ok "edge doctor"

step "edge run on the test video"
in_root "$V/edge" run --config /etc/queue-mood/config.toml --max-frames "$FRAMES" --json > "$WORK/run.json" \
    || fail "edge run failed"
"$BPY" .ci/tracked.py "$WORK/run.json" "$FRAMES" || fail "edge run did not track the face through every frame"
ok "edge run tracked the face"

step "edge's test files with Trixie's Python, numpy and OpenCV (.ci/pi_env_tests.sh in the root)"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends opencv-data \
    python3-matplotlib python3-skimage > /dev/null || fail "apt could not install the tests' packages in the root"
mkdir "$WORK/repo"
git ls-files -co --exclude-standard -z | tar --null -T - -c | tar -x -C "$WORK/repo"
in_root bash -c "cd $IN/repo && bash .ci/pi_env_tests.sh" || fail "edge's tests fail on Trixie (see above)"
ok "edge's tests on Trixie"

printf '\ntrixie: %d passed, 0 failed\n' "$passed"
