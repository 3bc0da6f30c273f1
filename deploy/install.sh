#!/usr/bin/env bash
[ -n "${BASH_VERSION:-}" ] || { echo "install.sh: run it with bash, not sh: sudo bash $0. Nothing was changed." >&2; exit 2; }  # sh (dash) would stop at set -o pipefail below, in words of its own
# Install or upgrade the queue-mood monitor from this bundle (made by `edge bundle`) on
# Raspberry Pi OS 64-bit, Bookworm or Trixie (Raspberry Pi Imager's default since October 2025):
#
#   sudo ./install.sh [--no-service]
#
# Safe to run again: an upgrade replaces the program and the model, and keeps
# /etc/queue-mood/config.toml and the alert spool in /var/lib/queue-mood/spool. A kept config
# that this version refuses stops the upgrade before anything changes.
#
#   1. apt (--no-install-recommends, no GUI): python3-picamera2 python3-opencv python3-numpy
#      python3-venv, plus python3-gpiozero/python3-lgpio where the archive has them and
#      opencv-data when the config uses the haar detector; only what is missing.
#   2. the venv $PREFIX/venv with --system-site-packages, so numpy, OpenCV and picamera2 come
#      from apt (Bookworm: numpy 1.24, OpenCV 4.6; Trixie: numpy 2.2, OpenCV 4.10); pip adds only
#      what apt lacks: ai-edge-litert, the queue-mood wheel (extras edge, mqtt, gpio:
#      prometheus_client, paho-mqtt, gpiozero; pure Python; the wheel carries the BlazeFace
#      models). A constraint file ($PREFIX/pip-constraints.txt) pins numpy to apt's version (apt's
#      OpenCV is built against it) and forbids every OpenCV wheel; all of pip's input is binary wheels.
#      A numpy wheel already in a kept venv is uninstalled first, so apt's is the one it sees; a
#      venv made with another Python than it runs now (an in-place OS upgrade) is made anew.
#   3. the system user queue-mood in the groups video and gpio (gpio is created if missing).
#   4. the model to $PREFIX/model, a detector file the config names to $PREFIX/detector; the config to
#      $ETC_DIR/config.toml only if there is none (else beside it as config.toml.bundle), and
#      config.example.toml (every key explained) beside it. Each is staged beside its target and
#      swapped in at the end, the model with its card as one folder: stopped anywhere, old or new.
#   5. queue-mood.service to $UNIT_DIR, enabled and (re)started.
#   6. this bundle kept as $PREFIX/bundle, the one installed before it as $PREFIX/bundle.previous:
#      sudo /opt/queue-mood/bundle.previous/install.sh goes back to that version (config,
#      spool and history stay; under other folders, the summary at the end names them in it).
#
# Environment overrides (CI runs it unprivileged into a temp prefix with all of them set):
#   PREFIX=/opt/queue-mood          program, venv, model, detector
#   ETC_DIR=/etc/queue-mood         config.toml
#   STATE_DIR=/var/lib/queue-mood   the service's state: spool/ (undelivered alerts)
#   UNIT_DIR=/etc/systemd/system    where queue-mood.service is written
#   PYTHON=/usr/bin/python3         the interpreter apt's python3-* packages belong to
#   QM_SKIP_APT=1                   never call apt-get (the packages are known to be there)
#   QM_NO_SERVICE=1                 as --no-service: write the unit, but do not enable or start it
#   QM_SYSTEM_USER=0                no queue-mood user or gpio group, no chown
#   QM_DOCTOR=0                     skip the `edge doctor` run at the end
#   QM_PIP_ARGS="..."               extra arguments for every pip install (e.g. --index-url URL)
#   QM_MIN_FREE_MB=400              free space needed where PREFIX goes (checked before anything)
#   QM_APT_LOCK_WAIT=300            seconds apt waits for another apt/dpkg to finish
#   QM_MACHINE=aarch64              tests only: the architecture to check instead of this machine's
# Paths in the bundled config and unit that start with /opt/queue-mood, /etc/queue-mood or
# /var/lib/queue-mood are rewritten to PREFIX, ETC_DIR and STATE_DIR.
set -euo pipefail
# What this writes without a mode of its own (PREFIX, the venv, pip's files in it) must be readable
# by the service's user: a hardened root umask (027, 077: sudo keeps the caller's where it is stricter
# than 022) left /opt/queue-mood 0750 root:root, and the service failing to start at every try.
umask 022

DEFAULT_PREFIX=/opt/queue-mood
DEFAULT_ETC_DIR=/etc/queue-mood
DEFAULT_STATE_DIR=/var/lib/queue-mood
DEFAULT_UNIT_DIR=/etc/systemd/system
DEFAULT_PYTHON=/usr/bin/python3
PREFIX=${PREFIX:-$DEFAULT_PREFIX}
ETC_DIR=${ETC_DIR:-$DEFAULT_ETC_DIR}
STATE_DIR=${STATE_DIR:-$DEFAULT_STATE_DIR}
UNIT_DIR=${UNIT_DIR:-$DEFAULT_UNIT_DIR}
PYTHON=${PYTHON:-$DEFAULT_PYTHON}
QM_SKIP_APT=${QM_SKIP_APT:-0}
QM_NO_SERVICE=${QM_NO_SERVICE:-0}
QM_SYSTEM_USER=${QM_SYSTEM_USER:-1}
QM_DOCTOR=${QM_DOCTOR:-1}
QM_PIP_ARGS=${QM_PIP_ARGS:-}
QM_MIN_FREE_MB=${QM_MIN_FREE_MB:-400}
QM_APT_LOCK_WAIT=${QM_APT_LOCK_WAIT:-300}
SERVICE_USER=queue-mood

for arg in "$@"; do
    case "$arg" in
        --no-service) QM_NO_SERVICE=1 ;;
        -h|--help) sed -n '3,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV="$PREFIX/venv"
CONFIG="$ETC_DIR/config.toml"
CONSTRAINTS="$PREFIX/pip-constraints.txt"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# A copy cut short (scp interrupted, a full disk while unpacking, tar's "Unexpected EOF" passed
# over) leaves a wheel or model that pip or the service would call broken in other words (pip:
# "invalid wheel", told as no PyPI), or leaves out the files after it in the archive, which the
# checks below would call "not a bundle" or "found 0" wheels: so this comes first.
# MANIFEST.json holds each file's sha256 but config.toml's (its digest would help guess the passwords
# in it; an older bundle's lists it); config.toml and README.txt may be edited, so only the program
# and model files are compared. Prints the files missing, then on a second line those that differ.
# $PYTHON not running yet gives "": the checks after this one say what is wrong.
damaged=$("$PYTHON" -I - "$BUNDLE" 2>/dev/null <<'EOF'
import hashlib, json, os, sys
root = sys.argv[1]
try:
    with open(os.path.join(root, "MANIFEST.json"), encoding="utf-8") as f:
        files = dict(json.load(f)["files"])
except (OSError, ValueError, KeyError, TypeError):  # an older bundle has none: nothing to compare
    sys.exit()
missing, differ = [], []
for name, digest in files.items():
    if not name.startswith(("wheels/", "model/", "detector/")):
        continue
    h = hashlib.sha256()
    try:
        with open(os.path.join(root, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        missing.append(name)
        continue
    except OSError:
        pass
    if h.hexdigest() != digest:
        differ.append(name)
print(" ".join(missing))
print(" ".join(differ))
EOF
) || damaged=""
{ read -r missing_files; read -r damaged_files; } <<< "$damaged" || true
[[ -z ${missing_files:-} ]] \
    || die "$BUNDLE lacks ${missing_files// /, }, which its MANIFEST.json lists: the copy or the unpacking was cut short (tar said \"Unexpected EOF\"?); copy the .tar.gz again, unpack it afresh (rm -rf $BUNDLE first) and run install.sh again. Nothing was changed."
[[ -z ${damaged_files:-} ]] \
    || die "the bundle's MANIFEST.json lists another sha256 for ${damaged_files// /, } in $BUNDLE: the copy is damaged or cut short; copy the .tar.gz again, unpack it afresh (rm -rf $BUNDLE first) and run install.sh again. Nothing was changed."

for f in config.toml queue-mood.service model/model_int8.tflite model/model.json; do
    [[ -f "$BUNDLE/$f" ]] || die "$BUNDLE/$f is missing: this is not a complete queue-mood bundle (make one with \`edge bundle\`)."
done
shopt -s nullglob
wheels=("$BUNDLE"/wheels/queue_mood-*.whl)
detectors=("$BUNDLE"/detector/*)  # whatever the detector needs: a .tflite, Haar's .xml, YuNet's .onnx
shopt -u nullglob
if [[ ${#wheels[@]} -gt 1 ]]; then
    # tar xzf of a new bundle over an older one's folder adds files and removes none
    die "expected exactly one wheels/queue_mood-*.whl in $BUNDLE, found ${#wheels[@]}: an older bundle was unpacked (or copied) into the same folder before this one; remove the folder and unpack the new bundle afresh: rm -rf $BUNDLE && tar xzf NEW-BUNDLE.tar.gz -C $(dirname "$BUNDLE") && sudo $BUNDLE/install.sh. Nothing was changed."
fi
[[ ${#wheels[@]} -eq 1 ]] || die "expected exactly one wheels/queue_mood-*.whl in $BUNDLE, found ${#wheels[@]}."
WHEEL=${wheels[0]}

# Before anything changes: ai-edge-litert has 64-bit wheels only (elsewhere pip fails late, as if
# PyPI were unreachable). 32-bit Raspberry Pi OS on a Pi 4 or 5 runs a 64-bit kernel (uname -m
# says aarch64): its 32-bit userland shows in getconf LONG_BIT.
machine=${QM_MACHINE:-$(uname -m)}
if [[ -z ${QM_MACHINE:-} && $(getconf LONG_BIT 2>/dev/null || echo 64) == 32 ]]; then machine="$machine with a 32-bit userland"; fi
case "$machine" in
    aarch64|x86_64) ;;
    *) die "this bundle needs a 64-bit OS (aarch64 or x86_64), but this machine is $machine: install Raspberry Pi OS Lite (64-bit) with Raspberry Pi Imager and run it again. Nothing was changed." ;;
esac

if [[ $EUID -ne 0 ]] && { [[ $QM_SKIP_APT != 1 ]] || [[ $QM_SYSTEM_USER != 0 ]] || [[ $QM_NO_SERVICE != 1 ]]; }; then
    die "run it as root: sudo $0 (an unprivileged test install needs QM_SKIP_APT=1 QM_SYSTEM_USER=0 QM_NO_SERVICE=1 and PREFIX, ETC_DIR, STATE_DIR, UNIT_DIR)."
fi

# One install at a time: a second one (the first-boot unit's, or one from another SSH session while
# the first waits for apt) would run pip into the same venv and swap the kept bundles under the first.
# The lock is on the folder PREFIX goes in (/opt), there before and after an install.
lock_at=$(dirname "$PREFIX")
while [[ ! -d "$lock_at" ]]; do lock_at=$(dirname "$lock_at"); done
if command -v flock >/dev/null; then
    exec 9<"$lock_at"
    flock -n 9 || die "another install.sh is installing into $PREFIX now (the first-boot unit's, or one from another SSH session): let it finish, then run this one again if it is still needed. Nothing was changed."
fi

# Checks that change nothing come first, so a Pi they refuse is left as it was.
pyver=$("$PYTHON" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    || die "$PYTHON does not run; this bundle is for Raspberry Pi OS 64-bit, Bookworm or Trixie (Python 3.11 or newer). Nothing was changed."
if ! [[ $pyver =~ ^3\.([0-9]+)$ ]] || (( BASH_REMATCH[1] < 11 )); then
    die "$PYTHON is Python $pyver, but queue-mood needs Python 3.11 or newer (Raspberry Pi OS 64-bit, Bookworm or Trixie; Bullseye is too old). Nothing was changed."
fi

# The nearest existing folder of PREFIX: where the venv and pip's downloads go.
free_at=$PREFIX
while [[ ! -d "$free_at" ]]; do free_at=$(dirname "$free_at"); done
free_mb=$(df -Pk "$free_at" | awk 'NR == 2 {print int($4 / 1024)}')
[[ ${free_mb:-0} -ge $QM_MIN_FREE_MB ]] \
    || die "only ${free_mb:-0} MB free at $free_at, and installing needs about $QM_MIN_FREE_MB MB: free some space (sudo apt clean; sudo journalctl --vacuum-size=100M) and run it again. Nothing was changed."

# The config that will be in force: the installed one survives an upgrade.
ACTIVE_CONFIG="$BUNDLE/config.toml"
[[ -f "$CONFIG" ]] && ACTIVE_CONFIG="$CONFIG"

# Prints the value of a dotted key of a TOML file ("" when absent); tomllib is in Python 3.11.
# A file that does not read or parse gives "" too: the config check below refuses it in one
# sentence. utf-8-sig: a BOM (Windows Notepad) is accepted, as edge itself does.
config_value() {
    "$PYTHON" -I - "$1" "$2" <<'EOF'
import sys, tomllib
try:
    with open(sys.argv[1], encoding="utf-8-sig") as f:
        node = tomllib.loads(f.read())
except Exception:  # noqa: BLE001 - unreadable, not UTF-8, not TOML: all refused below
    node = {}
for key in sys.argv[2].split("."):
    node = node.get(key, {}) if isinstance(node, dict) else {}
print(node if isinstance(node, (str, int, float)) else "")
EOF
}

# Prints why this version refuses $CONFIG and fails; succeeds where it loads, or where the check
# cannot be made (the wheel not importable yet, a failure that is not the config's: the doctor
# says). config_refusal PYTHON [WHEEL]: with WHEEL, edge is imported from that zip, as this
# version's code (the wheel is pure Python), and never from another install.
config_refusal() {
    (cd / && "$1" -I - "$CONFIG" "${2:-}" 2>&1 >/dev/null <<'EOF'
import sys
wheel = sys.argv[2] if len(sys.argv) > 2 else ""
if wheel:
    sys.path.insert(0, wheel)
try:
    import edge
    from edge.config import ConfigError, both_sources, load_config
except Exception:  # noqa: BLE001 - the wheel not importable here yet: checked after the install
    if wheel:
        sys.exit(0)
    raise  # the installed program itself does not import: not restarted into that either
if wheel and not edge.__file__.startswith(wheel):  # another install's edge, not this wheel's
    sys.exit(0)
try:
    cfg = load_config(sys.argv[1])
except ConfigError as exc:
    sys.exit(str(exc))
except Exception:  # noqa: BLE001 - not the config's fault: the doctor at the end says what is wrong
    sys.exit(0)
# Releases before 93b8495 (30 November 2026) watched the path beside the bundle's `camera = 0`:
# upgraded as it is, a Pi that watched a network camera would turn to a camera it may not have.
if said := both_sources(cfg.source):
    sys.exit(f"{said}; releases before this one watched the path.")
EOF
    )
}

# An upgrade keeps the installed config: read it as this version will, before anything changes.
# One it refuses would leave the Pi one reboot from a crash loop (systemd restarting the service
# into the same error about once a minute) while the old version still runs; refused, nothing is replaced.
# Where the wheel cannot be imported yet (numpy or OpenCV not installed), the same check runs
# after the install instead, and then leaves the service unrestarted.
if [[ -f "$CONFIG" ]]; then
    early_error=$(config_refusal "$PYTHON" "$WHEEL") \
        || die "$CONFIG does not load with this version: ${early_error##*$'\n'} Fix it (this bundle's own settings are in $BUNDLE/config.toml) and run install.sh again; until then the installed version goes on running. Nothing was changed."
fi

rewrite_paths() {
    sed -e "s|$DEFAULT_PREFIX|${PREFIX}|g" -e "s|$DEFAULT_STATE_DIR|${STATE_DIR}|g" \
        -e "s|$DEFAULT_ETC_DIR|${ETC_DIR}|g" "$1"
}

# -- 1. apt ------------------------------------------------------------------------------
# Wait for another apt or dpkg (a first boot's updater, someone's apt upgrade) instead of failing.
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$QM_APT_LOCK_WAIT" "$@"; }
# DPkg::Lock::Timeout covers dpkg's lock only: `apt-get update` fails at once while another apt holds
# the package lists (apt-daily.service, minutes after a first boot), so that wait is done here.
apt_update() {
    local deadline=$((SECONDS + QM_APT_LOCK_WAIT)) log rc
    log=$(mktemp)
    while true; do
        rc=0
        apt_get update --error-on=any 2>&1 | tee "$log" || rc=$?
        if [[ $rc == 0 ]] || ! grep -q 'lists/lock' "$log" || (( SECONDS >= deadline )); then break; fi
        echo "another apt is updating the package lists; waiting for it (at most ${QM_APT_LOCK_WAIT}s in all)"
        sleep $(( deadline - SECONDS < 5 ? deadline - SECONDS : 5 ))
    done
    rm -f "$log"
    return "$rc"
}
apt_known() { apt-cache show "$1" >/dev/null 2>&1; }
apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

if [[ $QM_SKIP_APT == 1 ]]; then
    say "apt: skipped (QM_SKIP_APT=1)"
else
    say "apt: system packages"
    command -v apt-get >/dev/null || die "apt-get not found: this script is for Raspberry Pi OS / Debian (Bookworm or Trixie)."
    wanted=(python3-opencv python3-numpy python3-venv)
    optional=(python3-picamera2 python3-gpiozero python3-lgpio)
    if [[ $(config_value "$ACTIVE_CONFIG" detector.kind) == haar ]]; then wanted+=(opencv-data); fi
    missing=()
    for p in "${wanted[@]}" "${optional[@]}"; do
        apt_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        # --error-on=any: an index that cannot be fetched (no network) fails here, instead of
        # apt carrying on with stale or no package lists.
        apt_update \
            || die "apt-get update failed (see above): the Pi needs the internet while installing (check: ping -c1 deb.debian.org), and apt must not be busy elsewhere for more than ${QM_APT_LOCK_WAIT}s. Nothing was installed."
        install_now=()
        for p in "${missing[@]}"; do
            if apt_known "$p"; then
                install_now+=("$p")
            elif [[ " ${wanted[*]} " == *" $p "* ]]; then
                die "apt has no package $p; is this Raspberry Pi OS / Debian (Bookworm or Trixie)?"
            else
                echo "note: apt has no $p here (it comes with Raspberry Pi OS); skipping it."
            fi
        done
        if [[ ${#install_now[@]} -gt 0 ]]; then
            apt_get install -y --no-install-recommends "${install_now[@]}" \
                || die "apt-get install ${install_now[*]} failed (see above); fix that and run install.sh again (queue-mood itself was not changed)."
        fi
    else
        echo "all present: ${wanted[*]} ${optional[*]}"
    fi
fi

"$PYTHON" -I -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot make a venv: install python3-venv (sudo apt install python3-venv)."

# apt's OpenCV is built against apt's numpy (1.x on Bookworm, 2.x on Trixie): pip must keep that
# one, so it is pinned to its version (a bound like numpy<2 would let pip put 1.26 beside Bookworm's
# 1.24, and forbid Trixie's own).
numpy_found=$("$PYTHON" -I -c 'import os, numpy; print(numpy.__version__, os.path.dirname(numpy.__file__))' 2>/dev/null) \
    || die "$PYTHON cannot import apt's numpy: install python3-numpy (sudo apt install python3-numpy python3-opencv) and run install.sh again (queue-mood itself was not changed)."
read -r apt_numpy numpy_dir <<< "$numpy_found"
# A numpy that `sudo pip install` put in /usr/local comes before apt's in every venv that sees the
# system's packages: the pin would take its version, and apt's OpenCV may not run with it.
[[ $numpy_dir != /usr/local/* ]] \
    || die "numpy $apt_numpy in $numpy_dir (installed system-wide by pip) hides apt's python3-numpy, which apt's OpenCV is built against: sudo $PYTHON -m pip uninstall --break-system-packages numpy, then run install.sh again (queue-mood itself was not changed)."

# -- 2. venv and pip ---------------------------------------------------------------------
say "venv: $VENV"
if [[ -d "$PREFIX" ]]; then new_prefix=0; else new_prefix=1; fi
mkdir -p "$PREFIX"
# An in-place upgrade of the OS to the next Debian release (Bookworm -> Trixie) leaves the venv
# running the new Python while its packages, pip included, stay in the old one's folder: the
# service then fails to import edge, and pip is gone. Such a venv is made anew.
made_with=$(sed -n 's/^version *= *\([0-9]*\.[0-9]*\).*/\1/p' "$VENV/pyvenv.cfg" 2>/dev/null) || made_with=""
runs=$("$VENV/bin/python" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || runs=""
new_venv=1
if [[ -n $made_with && -n $runs && $made_with != "$runs" ]]; then
    echo "the venv was made with Python $made_with and runs Python $runs now (the OS was upgraded): making it anew"
elif [[ -x "$VENV/bin/python" ]] && grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null \
        && "$VENV/bin/python" -I -c 'import sys' 2>/dev/null; then
    echo "reusing the existing venv"
    new_venv=0
fi
if [[ $new_venv == 1 ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV" || { rm -rf "$VENV"; [[ $new_prefix == 0 ]] || rm -rf "$PREFIX"; die "$PYTHON could not make the venv $VENV (see above)."; }
fi

cat > "$CONSTRAINTS" <<EOF
# queue-mood: numpy and OpenCV come from apt (python3-numpy $apt_numpy, python3-opencv) and
# must stay there. Use this file for any pip install into $VENV:
#   $VENV/bin/pip install -c $CONSTRAINTS PACKAGE
numpy==$apt_numpy
opencv-python<0
opencv-python-headless<0
opencv-contrib-python<0
opencv-contrib-python-headless<0
EOF

# shellcheck disable=SC2206 # QM_PIP_ARGS is a list of words on purpose
pip_extra=($QM_PIP_ARGS)
# pip replaces queue-mood by removing the installed one, then installing the new one: stopped in
# between (Ctrl-C, SIGTERM, SIGHUP), an upgrade leaves the venv without `edge`, and the running
# service fails at its next start. In a kept venv pip runs deaf to those signals; one that came
# stops the install once pip is done.
interrupted=""
if [[ $new_venv == 0 ]]; then
    # shellcheck disable=SC2064 # $sig is meant to expand now
    for sig in INT TERM HUP; do trap "interrupted=SIG$sig" "$sig"; done
fi
pip_install() {
    (if [[ $new_venv == 0 ]]; then trap '' INT TERM HUP; fi
    exec "$VENV/bin/python" -I -m pip --disable-pip-version-check --no-input install --root-user-action=ignore \
        --only-binary=:all: -c "$CONSTRAINTS" "${pip_extra[@]}" "$@")
}

# A numpy wheel inside a kept venv (pip's, from an older install or a `pip install` by hand)
# shadows apt's; the pin would only have pip swap it for a wheel of apt's version, which the check
# below refuses. It goes, so the venv sees apt's numpy again.
venv_numpy=$(cd / && "$VENV/bin/python" -I -c 'import sys
from importlib.util import find_spec
spec = find_spec("numpy")
print(spec.origin if spec and spec.origin and spec.origin.startswith(sys.prefix + "/") else "")' 2>/dev/null) \
    || venv_numpy=""
if [[ -n $venv_numpy ]]; then
    say "pip: removing the venv's own numpy ($(dirname "$venv_numpy")), so apt's $apt_numpy is used"
    "$VENV/bin/python" -I -m pip --disable-pip-version-check --no-input uninstall -y --root-user-action=ignore numpy \
        || die "could not remove the numpy wheel from $VENV (see above): $VENV/bin/pip uninstall numpy, then run install.sh again."
fi

say "pip: queue-mood ($(basename "$WHEEL")) with ai-edge-litert, prometheus_client, paho-mqtt, gpiozero"
pip_failed() {
    if [[ $new_prefix == 1 ]]; then rm -rf "$PREFIX"; elif [[ $new_venv == 1 ]]; then rm -rf "$VENV"; fi
    die "pip could not install $1 (see above): the Pi needs access to PyPI (https://pypi.org) while installing, or set QM_PIP_ARGS=\"--index-url URL\" for a mirror. $([[ $new_venv == 1 ]] && echo "The new venv was removed." || echo "The service was not restarted.")"
}
pip_install "${WHEEL}[edge,mqtt,gpio]" || pip_failed "queue-mood and its dependencies (ai-edge-litert, prometheus_client, paho-mqtt, gpiozero)"
# Same version number, new build: replace the package itself (its dependencies stay).
pip_install --no-deps --force-reinstall "$WHEEL" || pip_failed "$(basename "$WHEEL")"
trap - INT TERM HUP
[[ -z $interrupted ]] \
    || die "stopped by $interrupted after pip had installed the new program (the service was not restarted; model, config and unit are the old ones): run install.sh again to finish."

say "check: numpy and OpenCV in the venv come from apt"
(cd / && "$VENV/bin/python" -I - <<'EOF'
import sys
from importlib import metadata

import numpy
print(f"numpy {numpy.__version__} from {numpy.__file__}")
if numpy.__file__.startswith(sys.prefix + "/"):  # the venv's own, not apt's
    sys.exit(f"a numpy wheel ({numpy.__version__}) is in the venv, but apt's OpenCV is built against apt's numpy: "
             f"{sys.prefix}/bin/pip uninstall numpy")
# In the venv only: Trixie's python3-opencv has metadata of its own ("opencv") in apt's folder.
wheels = sorted({d.metadata["Name"] for d in metadata.distributions()
                 if (d.metadata["Name"] or "").lower().startswith("opencv")
                 and str(d.locate_file("")).startswith(sys.prefix + "/")})
if wheels:
    sys.exit(f"an OpenCV wheel is installed ({', '.join(wheels)}); apt's python3-opencv must be the only one: "
             f"{sys.prefix}/bin/pip uninstall {' '.join(wheels)}")
import cv2
print(f"OpenCV {cv2.__version__} from {cv2.__file__}")
EOF
) || die "the venv's numpy/OpenCV are not apt's (see above)."

# -- 3. system user ----------------------------------------------------------------------
if [[ $QM_SYSTEM_USER != 0 ]]; then
    say "user: $SERVICE_USER (groups video, gpio)"
    for g in video gpio; do
        getent group "$g" >/dev/null || groupadd --system "$g"
    done
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        usermod --append --groups video,gpio "$SERVICE_USER"
    else
        useradd --system --user-group --groups video,gpio --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "queue-mood monitor" "$SERVICE_USER"
    fi
fi

# -- 4. files ----------------------------------------------------------------------------
# Each file this step writes is staged beside its target first (NAME.new; the model and detector
# folders whole, as FOLDER.new), synced to the card, then swapped in by renames at the end. The model
# and its card (which names the model's sha256) trade places as one folder in one step, so a power
# cut or a kill at any point leaves the old pair or the new one, never one of each, which the
# service refuses. A staging step that fails (a full disk) removes what was staged: nothing changes.
say "files: $PREFIX/model, $PREFIX/detector, $ETC_DIR, $UNIT_DIR/queue-mood.service, $STATE_DIR"
staged=() targets=() written=()
unstage() { if [[ ${#staged[@]} -gt 0 ]]; then rm -rf "${staged[@]}"; fi; }
trap unstage EXIT

stage_error=""
staging() {  # staging COMMAND...: run it, its last error line kept for stage_failed
    local out
    out=$("$@" 2>&1 >/dev/null) && return 0
    stage_error=${out##*$'\n'}
    return 1
}
stage_failed() {  # stage_failed PATH: one sentence; nothing has been swapped in yet
    unstage
    local why="could not write $1 (${stage_error:-see above})" todo="fix that"
    if [[ $stage_error == *"No space left on device"* || $stage_error == *"Disk quota exceeded"* ]]; then
        why="the disk is full: there was no room for $1" todo="free some space (sudo apt clean; sudo journalctl --vacuum-size=100M)"
    fi
    die "$why, so none of the model, detector, config and unit files was changed (pip had already installed the new program; the service was not restarted): $todo and run install.sh again to finish."
}
stage() {  # stage DEST: DEST.new is to replace DEST
    staged+=("$1.new") targets+=("$1")
    staging rm -rf "$1.new" "$1.new.old" || stage_failed "$1.new"  # left by an install killed before
}
stage_file() {  # stage_file MODE SRC DEST
    stage "$3"
    staging install -m "$1" "$2" "$3.new" || stage_failed "$3.new"
    written+=("$3.new")
}
write_rewritten() { (umask 077 && rewrite_paths "$1" > "$2"); }  # a config's secrets never readable by all
stage_rewritten() {  # stage_rewritten MODE SRC DEST: SRC with its paths rewritten
    stage "$3"
    { staging write_rewritten "$2" "$3.new" && staging chmod "$1" "$3.new"; } || stage_failed "$3.new"
    written+=("$3.new")
}
stage_folder() {  # stage_folder DIR SRC...: what DIR holds (hard links: no room taken), the SRC files replacing theirs
    local dir=$1 f; shift
    stage "$dir"
    staging install -d -m 0755 "$dir.new" || stage_failed "$dir.new"
    if [[ -d "$dir" ]]; then staging cp -al "$dir/." "$dir.new/" || stage_failed "$dir.new"; fi
    for f in "$@"; do  # removed first: installed onto a hard link, the new file would be written into the old folder
        { staging rm -f "$dir.new/${f##*/}" && staging install -m 0644 "$f" "$dir.new/${f##*/}"; } \
            || stage_failed "$dir.new/${f##*/}"
        written+=("$dir.new/${f##*/}")
    done
}
# exchange A B: the two folders trade places in one step (renameat2's RENAME_EXCHANGE, which ext4
# has); exits 3 where the file system or the C library lacks it.
exchange() {
    "$PYTHON" -I -c 'import ctypes, errno, os, sys
try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except AttributeError:
    sys.exit(3)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
if renameat2(AT_FDCWD, os.fsencode(sys.argv[1]), AT_FDCWD, os.fsencode(sys.argv[2]), RENAME_EXCHANGE):
    err = ctypes.get_errno()
    sys.exit(3 if err in (errno.EINVAL, errno.ENOSYS) else f"{sys.argv[2]}: {os.strerror(err)}")' "$1" "$2"
}
swap_in() {  # each staged path to its target, the replaced folders left at the staged paths for unstage
    local i new old rc
    for i in "${!staged[@]}"; do
        new=${staged[i]} old=${targets[i]}
        if [[ -d "$new" && -d "$old" ]]; then
            rc=0; exchange "$new" "$old" || rc=$?
            if [[ $rc == 3 ]]; then  # no exchange here: a moment without the folder, never a mixed one
                mv -T "$old" "$new.old" && mv -T "$new" "$old" && mv -T "$new.old" "$new" || return 1
            elif [[ $rc != 0 ]]; then
                return 1
            fi
        else
            mv -f -T "$new" "$old" || return 1
        fi
    done
}

# Ctrl-C, SIGTERM or SIGHUP while staging: what was staged goes, and nothing is replaced.
# shellcheck disable=SC2064 # $sig is meant to expand now
for sig in INT TERM HUP; do
    trap "die 'stopped by SIG$sig before any of the model, detector, config and unit files was replaced (pip had already installed the new program; the service was not restarted): run install.sh again to finish.'" "$sig"
done
for d in "$PREFIX/model" "$PREFIX/detector" "$ETC_DIR" "$UNIT_DIR"; do
    staging install -d -m 0755 "$d" || stage_failed "$d"
done
for d in "$STATE_DIR" "$STATE_DIR/spool"; do
    staging install -d -m 0750 "$d" || stage_failed "$d"
done
stage_folder "$PREFIX/model" "$BUNDLE/model/model_int8.tflite" "$BUNDLE/model/model.json"
detector_files=()
for f in "${detectors[@]}"; do
    if [[ -f "$f" ]]; then detector_files+=("$f"); fi
done
if [[ ${#detector_files[@]} -gt 0 ]]; then stage_folder "$PREFIX/detector" "${detector_files[@]}"; fi
if [[ -f "$BUNDLE/config.example.toml" ]]; then stage_file 0644 "$BUNDLE/config.example.toml" "$ETC_DIR/config.example.toml"; fi
if [[ -f "$CONFIG" ]]; then
    echo "keeping $CONFIG; this bundle's config is beside it as config.toml.bundle"
    stage_rewritten 0640 "$BUNDLE/config.toml" "$CONFIG.bundle"
else
    echo "writing $CONFIG"
    stage_rewritten 0640 "$BUNDLE/config.toml" "$CONFIG"
fi
stage_rewritten 0644 "$BUNDLE/queue-mood.service" "$UNIT_DIR/queue-mood.service"
# last: it says which bundle is installed, so it is swapped in once the rest is
if [[ -f "$BUNDLE/MANIFEST.json" ]]; then stage_file 0644 "$BUNDLE/MANIFEST.json" "$PREFIX/MANIFEST.json"; fi
# On the card before the renames: ext4 writes a new file's data up to 30 s after it is written, and
# a power cut after a rename but before that would leave the swapped-in file empty.
staging sync -- "${written[@]}" || stage_failed "${written[0]}"

# Ctrl-C, SIGTERM or SIGHUP wait for the renames (a subshell deaf to them, its mv and python too),
# then stop the install with what is installed named.
interrupted=""
# shellcheck disable=SC2064
for sig in INT TERM HUP; do trap "interrupted=SIG$sig" "$sig"; done
swap_error=$( (trap '' INT TERM HUP; swap_in && unstage) 2>&1 ) \
    || die "could not put the staged files in place (${swap_error##*$'\n'}): the files before that one are the new ones, the rest the old ones, each whole (the service was not restarted): fix that and run install.sh again to finish."
staged=()  # swapped in, and the folders they replaced removed
trap - INT TERM HUP
[[ -z $interrupted ]] \
    || die "stopped by $interrupted once the new program, model and files were in place (the service was not restarted): run install.sh again to finish."
if [[ $QM_SYSTEM_USER != 0 ]]; then
    for f in "$CONFIG" "$CONFIG.bundle"; do
        if [[ -f "$f" ]]; then chown "root:$SERVICE_USER" "$f"; fi
    done
    chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
fi

# -- 5. service --------------------------------------------------------------------------
say "service: $UNIT_DIR/queue-mood.service"

# The kept config as this version reads it, where the check before the install could not import
# the wheel. One it refuses (a key an older release wrote at a value the store chose, a value now
# out of range) would have systemd restart the service into the same error about once a minute: then the
# service is not restarted, and the running one keeps going.
config_error=""
if ! config_error=$(config_refusal "$VENV/bin/python"); then
    echo "install.sh: $CONFIG does not load with this version: ${config_error##*$'\n'} Fix it (this bundle's own settings are beside it in $CONFIG.bundle), then: sudo systemctl restart queue-mood.service" >&2
else
    config_error=""
fi

if [[ $QM_DOCTOR != 0 ]]; then
    say "edge doctor"
    (cd / && "$VENV/bin/edge" doctor --config "$CONFIG") || echo "edge doctor reported a problem (FAIL above)."
fi

# -- 6. keep this bundle for a rollback ---------------------------------------------------
# Every bundle's wheel is queue-mood 0.1.0 (pip: "already installed with the same version"): the
# bundles are told apart by when `edge bundle` made them, and from which commit where it recorded one.
made() {
    "$PYTHON" -I -c 'import json, sys; m = json.load(open(sys.argv[1], encoding="utf-8"))
print("made", m["created"], *(["from commit", m["commit"]] if m.get("commit") else []))' \
        "$1/MANIFEST.json" 2>/dev/null || echo "made at a time it does not record"
}
installed=$(made "$BUNDLE")  # before keep_bundle: a rollback runs from bundle.previous, which it refills

# $PREFIX/bundle is what is installed now, $PREFIX/bundle.previous what was before it. Running
# bundle.previous/install.sh swaps them (this script keeps running from its unlinked file).
keep_bundle() {  # each step checked: set -e does not apply inside a function called with ||
    local cur="$PREFIX/bundle" prev="$PREFIX/bundle.previous" tmp="$PREFIX/.bundle.new"
    if [[ -d "$cur" && "$BUNDLE" -ef "$cur" ]]; then return 0; fi
    # the same bundle again (a second run after a dropped SSH session): the rollback stays as it is
    if [[ -d "$cur" ]] && diff -rq "$BUNDLE" "$cur" >/dev/null 2>&1; then return 0; fi
    rm -rf "$tmp" "$prev.old"
    cp -R "$BUNDLE" "$tmp" && chmod 0700 "$tmp" || return 1  # its config.toml may hold credentials
    if [[ -d "$prev" ]]; then mv "$prev" "$prev.old" || return 1; fi
    if [[ -d "$cur" ]]; then mv "$cur" "$prev" || return 1; fi
    mv "$tmp" "$cur" || return 1
    rm -rf "$prev.old"
}
# Best effort: the install is done by now, and the service must still be restarted on it.
keep_bundle || { rm -rf "$PREFIX/.bundle.new"; echo "install.sh: this bundle could not be kept for a rollback (see above; a full disk?); the install itself is done."; }

# What this script wrote onto the SD card before the service starts on it: ext4 writes a new
# file's data up to 30 s after the file appears, and a Pi unplugged meanwhile (installed at a desk,
# then carried to the till) boots to an empty config, model or venv file, which the service would
# restart into about once a minute.
sync

if [[ $QM_NO_SERVICE == 1 ]]; then
    echo "not enabling or starting the service (--no-service / QM_NO_SERVICE=1)"
elif [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
    systemctl enable queue-mood.service
    if [[ -n $config_error ]]; then
        echo "not restarting queue-mood.service: its config does not load (above); a running service keeps its version until then"
    else
        systemctl restart queue-mood.service
        sleep 3
        systemctl --no-pager --lines=5 status queue-mood.service || true
    fi
else
    echo "systemd is not running here: the unit is written but not started."
fi

# Where the status page is, from the config in force as the program reads it (never its token).
# A command substitution, which bash waits for: a process substitution's python outlived the script
# (its exit is slow on a busy Pi), holding the install lock, and an install run right after was refused.
status_line=$(cd / && "$VENV/bin/python" -I - "$CONFIG" 2>/dev/null <<'EOF'
import sys
from edge.config import load_config
s = load_config(sys.argv[1]).status
print(int(s.enabled), s.host, s.port, "token" if s.token else "password" if s.password else
      "metrics" if s.metrics_token else "none")
EOF
) || status_line=""
read -r status_on status_host status_port status_auth <<< "$status_line" || true
if [[ -z ${status_on:-} ]]; then
    page="see [status] in $CONFIG (edge config --config $CONFIG shows it)"
elif [[ $status_on == 0 ]]; then
    page="off ([status] enabled = false in $CONFIG)"
elif [[ $status_port == 0 ]]; then
    page="a free port chosen at each start: journalctl -u queue-mood | grep 'status page'"
elif [[ $status_host == 127.* || $status_host == localhost || $status_host == ::1 ]]; then
    case $status_auth in  # a plain curl of a page with a token or password answers 401
        token) curl_auth="-H 'Authorization: Bearer TOKEN' " ;;
        password) curl_auth="-u USER:PASSWORD " ;;
        *) curl_auth="" ;;
    esac
    page="http://127.0.0.1:$status_port/ on the Pi only (curl ${curl_auth}http://127.0.0.1:$status_port/status${curl_auth:+, with [status] ${status_auth/password/user and password} from $CONFIG}); for the store network see [status] in $CONFIG"
else
    if [[ $status_host == 0.0.0.0 || $status_host == :: ]]; then status_host="$(hostname).local"; fi
    if [[ $status_host == *:* ]]; then status_host="[$status_host]"; fi  # an IPv6 address in a URL
    if [[ $status_auth == token ]]; then
        page="http://$status_host:$status_port/?token=TOKEN (TOKEN: [status] token in $CONFIG)"
    elif [[ $status_auth == metrics ]]; then
        page="http://$status_host:$status_port/metrics for head office's scrape only; the page needs [status] token or password in $CONFIG"
    else
        page="http://$status_host:$status_port/ (user and password: [status] user and password in $CONFIG)"
    fi
fi

say "done"
previous=""
if [[ -d "$PREFIX/bundle.previous" ]]; then
    installed+=" (the version before it: $(made "$PREFIX/bundle.previous"))"
    # sudo clears the environment: the paths this install was given go on the command line, else
    # the old version would be installed afresh under the defaults, this install left as it is
    given=""
    for v in PREFIX ETC_DIR STATE_DIR UNIT_DIR PYTHON; do
        default="DEFAULT_$v"
        if [[ ${!v} != "${!default}" ]]; then given+="$v=$(printf '%q' "${!v}") "; fi
    done
    previous="rollback sudo $given$(printf %q "$PREFIX/bundle.previous/install.sh") (back to the version installed before this one)"
fi
cat <<EOF
bundle   $installed
status   $page
logs     journalctl -u queue-mood -f
program  $VENV/bin/edge
config   $CONFIG
spool    $STATE_DIR/spool
check    sudo $VENV/bin/edge doctor --config $CONFIG
$previous
EOF
