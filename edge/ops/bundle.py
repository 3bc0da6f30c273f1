"""`edge bundle`: one self-contained folder or .tar.gz with everything a checkout-queue Pi needs.

    queue-mood-bundle/
      README.txt             for the person at the store
      install.sh             apt + venv + pip + system user + config + systemd unit (deploy/install.sh)
      queue-mood.service     the systemd unit (deploy/queue-mood.service)
      config.toml            the validated config, its file paths rewritten to the installed ones
      config.example.toml    every key with its default and meaning (the sinks commented out)
      model/                 model_int8.tflite + model.json
      detector/              a detector model file the config names (BlazeFace ships in the wheel)
      wheels/                this checkout's queue-mood wheel
      MANIFEST.json          what went in: sha256 of each file but config.toml, model card summary, versions

Runs on the build machine, from a source checkout (it needs deploy/ and pyproject.toml). It
imports neither TensorFlow nor train/convert.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import tomllib
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from edge.card import CARD_NAME, GATE_KEYS, INT8_MODEL, check_pair, load_card, loosened_gate, pairing_notes, sha256_file
from edge.config import Config, load_config, model_file, resolve_model
from edge.errors import UserError
from edge.paths import expand_path, not_a_file
from edge.release import (INSTALL_PREFIX, MANIFEST, MODEL_DIR, commit_time, installed_prefix, prefix_above,
                          source_commit)

# Where install.sh puts things on the Pi (INSTALL_PREFIX, MODEL_DIR: edge.release); the bundled config points here.
ETC_DIR = "/etc/queue-mood"
STATE_DIR = "/var/lib/queue-mood"
DETECTOR_DIR = f"{INSTALL_PREFIX}/detector"
SPOOL_DIR = f"{STATE_DIR}/spool"
BUNDLE_NAME = "queue-mood-bundle"  # the top folder inside a .tar.gz
MODEL_FILE = INT8_MODEL  # fixed name on the Pi, so a kept config survives an upgrade
UNIT_NAME = "queue-mood.service"
DEPLOY_FILES = ("install.sh", UNIT_NAME)
# The config may hold the status page's token or password and MQTT/webhook credentials: it is
# readable by its owner only, in a folder bundle and in the .tar.gz (tar on the Pi keeps 0600).
# MANIFEST.json lists no sha256 of it: the MANIFEST is readable by all (in a folder bundle, and as
# PREFIX/MANIFEST.json on the Pi), and the config being mostly known defaults, its digest would let
# anyone test guesses of a short token or password offline. install.sh never compared it (it may
# be edited); a damaged one is refused when it is loaded.
SECRET_FILES = ("config.toml",)
TAR_SUFFIXES = (".tar.gz", ".tgz")
# other archive names: an --out ending so would be a folder of that name, not an archive
OTHER_ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".bz2", ".xz", ".zst", ".tbz", ".tbz2", ".txz", ".7z", ".rar")
# Top-level files of the checkout that a wheel build may read.
SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "README.rst", "LICENSE",
                "LICENSE.txt")
NOT_PACKAGED = ("__pycache__", "*.pyc", "*.egg-info")  # in the package folders, left out of the wheel


@dataclass
class BundleSettings:
    out: str  # folder, or a file ending in .tar.gz / .tgz
    model: str | None = None  # default: the config's model.path, else the shipped default model
    config: str | None = None  # default: edge run's defaults with camera 0
    wheel: str | None = None  # a prebuilt queue-mood wheel (default: build one from the checkout)
    source: str | None = None  # the checkout (default: the one this edge package lives in)


@dataclass
class BundleResult:
    path: Path
    files: list[str]  # relative to the bundle folder
    notes: list[str] = field(default_factory=list)
    size_bytes: int = 0
    epoch: int = 0  # the date the wheel's and the archive's files carry: source_epoch()


def reinstall_bundle(prefix=INSTALL_PREFIX) -> str:
    """The command that puts back what install.sh installed into `prefix` (the package, model,
    detector): the kept bundle's install.sh, run again."""
    if Path(prefix) == Path(INSTALL_PREFIX):
        return (f"sudo {prefix}/bundle/install.sh (where that folder is missing, run install.sh from the bundle's "
                ".tar.gz again)")
    # install.sh takes its PREFIX from the environment, not from where it lies; quoted as its rollback line is
    return (f"sudo PREFIX={shlex.quote(str(prefix))} {shlex.quote(f'{prefix}/bundle/install.sh')}, adding the ETC_DIR, "
            "STATE_DIR, UNIT_DIR and PYTHON the first install was given, if any (where that folder is missing, run "
            "install.sh from the bundle's .tar.gz again, the same way)")


def package_repair_advice(path) -> str:
    """What to do about a file of the installed package that is missing or unreadable (`path`):
    on a Pi that install.sh set up, reinstall the bundle (a pip install there would bring wheels
    in place of apt's numpy and OpenCV); elsewhere reinstall from the checkout (queue-mood is
    not on PyPI: a bare `pip install queue-mood` would find nothing, or someone else's)."""
    prefix = prefix_above(path)
    if prefix is not None:
        return f"reinstall the bundle, which puts the package's files back: {reinstall_bundle(prefix)}"
    source = default_source()
    if (source / "pyproject.toml").is_file():
        return (f"restore it in the checkout edge runs from ({source}: git checkout -- edge), then pip install -e "
                f"'{source}[edge]'")
    return "reinstall queue-mood from the checkout or wheel it came from (pip install --force-reinstall PATH)"


def default_source() -> Path:
    return Path(__file__).resolve().parents[2]


def _check_source(source: Path) -> None:
    missing = [p for p in ("pyproject.toml", *(f"deploy/{f}" for f in DEPLOY_FILES)) if not (source / p).is_file()]
    if missing:
        raise UserError(f"{source} is not a queue-mood source checkout (missing {', '.join(missing)}); "
                        "run `edge bundle` from the repository's build venv.")


# -- inputs -----------------------------------------------------------------------------


def _load_bundle_config(config_path: str | None, notes: list[str]) -> Config:
    cfg = load_config(config_path, None if config_path else {"source.camera": 0})  # model files are read here
    no_source = cfg.source.camera is None and not cfg.source.path
    unread: list[str] = []  # keys the Pi would not read, as edge config says them, with the camera 0 given below
    if config_path:
        # On the Pi the config is /etc/queue-mood/config.toml, beside which the service may not
        # write; relative paths to what it writes or reads go under its state folder (its
        # working folder, where they always went), not under this machine's config folder.
        pi = load_config(config_path, {"source.camera": 0} if no_source else None, paths_from=Path(STATE_DIR),
                         unread=unread)
        if pi.source.camera is None and pi.source.path.startswith("/dev/") and not os.path.exists(pi.source.path):
            # a camera's name that survives replugging (/dev/v4l/by-id/usb-...-video-index0) resolves on the
            # Pi only: here it reads as a recording, whose notes would call the camera's width or down_after_s
            # ineffective and say to remove them. Its keys are told as for the camera it is there.
            unread.clear()
            load_config(config_path, {"source.path": "/dev/video0"}, paths_from=Path(STATE_DIR), unread=unread)
        cfg.source.path, cfg.sinks.spool_dir, cfg.status.history_db = (
            pi.source.path, pi.sinks.spool_dir, pi.status.history_db)
        if cfg.sinks.jsonl is not None:
            cfg.sinks.jsonl.path = pi.sinks.jsonl.path
    if no_source:
        cfg.source.camera = 0
        notes.append("The config names no source; the bundle uses camera 0 ([source] camera = 0).")
    if cfg.source.path and "://" not in cfg.source.path:
        notes.append(f"source.path {cfg.source.path} is kept as it is: it must exist on the Pi.")
    notes.extend(f"{said}." for said in unread)
    return cfg


def _resolve_model(model: str | None, cfg: Config) -> tuple[Path, list[str]]:
    """The model to ship and what to know before trusting it on a Pi (Classifier.notes)."""
    path = model_file(model, "pass --model PATH to a model_int8.tflite from `edge convert`") if model \
        else resolve_model(cfg)
    card = load_card(path)
    check_pair(path, card)
    if card.model_sha256 and path.name != card.model_file and sha256_file(path) != card.model_sha256:
        # Here a file beside the card under another name (model_float32.tflite, a renamed older
        # model) runs with the card's settings; on the Pi it is installed as MODEL_FILE, the
        # name the card gives its own bytes, and check_pair refuses the pair at every start.
        raise UserError(f"{path} is not the model its card {path.with_name(CARD_NAME)} was written for (that is "
                        f"{card.model_file}, whose sha256 differs); the bundle installs it as {MODEL_FILE}, which the "
                        f"Pi would refuse with that card: pass --model {path.with_name(card.model_file)}, or the "
                        "--out folder `edge convert` wrote.")
    from edge.pipeline.runtime import runtime

    try:
        runtime()
    except UserError:  # no TFLite runtime on this machine: the card checks above are what can be done
        return path, pairing_notes(card, float_model=False)
    from edge.pipeline.classifier import Classifier

    return path, Classifier(path).notes()  # the model loads and matches its card (one sentence otherwise)


def _detector_files(cfg: Config) -> dict[str, Path]:
    """{bundle file name: source path} for the configured detector; rewrites cfg.detector.model.
    The BlazeFace models ship in the queue-mood wheel, so the default detector needs no file."""
    from edge.pipeline.detectors import DETECTORS

    files = DETECTORS[cfg.detector.kind].bundle_files(cfg.detector)
    if files:  # the plugin lists the file the config uses first
        cfg.detector.model = f"{DETECTOR_DIR}/{next(iter(files))}"
    return files


def _rewrite_paths(cfg: Config, notes: list[str]) -> None:
    cfg.model.path = f"{MODEL_DIR}/{MODEL_FILE}"
    if not cfg.sinks.spool_dir:
        cfg.sinks.spool_dir = SPOOL_DIR
    elif not cfg.sinks.spool_dir.startswith(STATE_DIR + "/"):
        notes.append(f"sinks.spool_dir {cfg.sinks.spool_dir} is outside {STATE_DIR}: the service may only write "
                     f"under {STATE_DIR} (ProtectSystem=strict); consider {SPOOL_DIR}.")
    if cfg.sinks.jsonl is not None:
        if not cfg.sinks.jsonl.path:
            cfg.sinks.jsonl.path = f"{STATE_DIR}/alerts.jsonl"
        elif not cfg.sinks.jsonl.path.startswith(STATE_DIR + "/"):
            notes.append(f"sinks.jsonl.path {cfg.sinks.jsonl.path} is outside {STATE_DIR}, where the service may not write.")
    if cfg.status.history_db and not cfg.status.history_db.startswith(STATE_DIR + "/"):
        notes.append(f"status.history_db {cfg.status.history_db} is outside {STATE_DIR}, where the service may not "
                     "write: the page would keep its history in memory only.")


def config_text(cfg: Config, origin: str) -> str:
    header = [  # no date: two bundles of one commit and config hold the same config.toml (MANIFEST.json dates them)
        f"# queue-mood settings, written by `edge bundle` (from {origin}).",
        "# Every setting is listed with its value. After editing: sudo systemctl restart queue-mood",
        "# Check it: sudo /opt/queue-mood/venv/bin/edge doctor --config /etc/queue-mood/config.toml",
        "",
    ]
    from edge.configdoc import effective_toml

    return "\n".join(header) + effective_toml(cfg, show_secrets=True)  # the Pi's own config needs them


# -- the project wheel ------------------------------------------------------------------


def _package_dirs(source: Path) -> list[Path]:
    data = tomllib.loads((source / "pyproject.toml").read_text())
    include = data.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", ["*"])
    return [p for p in sorted(source.iterdir()) if p.is_dir() and (p / "__init__.py").is_file()
            and any(fnmatch.fnmatch(p.name, pat) for pat in include)]


def _local_backend_ok(source: Path) -> bool:
    """Whether this environment's setuptools meets pyproject's build-system requirement
    (a venv from Python 3.11's ensurepip has 65.5, too old for an SPDX licence)."""
    from importlib import metadata

    def as_tuple(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", version)[:3])

    try:
        have = as_tuple(metadata.version("setuptools"))
    except metadata.PackageNotFoundError:
        return False
    requires = tomllib.loads((source / "pyproject.toml").read_text()).get("build-system", {}).get("requires", [])
    for req in requires:
        m = re.fullmatch(r"\s*setuptools\s*>=\s*([\d.]+)\s*", req)
        if m and have < as_tuple(m.group(1)):
            return False
    return True


def check_wheel(path: Path) -> None:
    """A --wheel that pip on the Pi can install: a queue_mood-*.whl file that is a zip holding
    its .dist-info/METADATA (a file merely named so would fail only there, at install time)."""
    advice = "pass a wheel built by `pip wheel .` in the checkout, or leave --wheel out to build one"
    if why := not_a_file(path):
        raise UserError(f"--wheel {path} {why}; {advice}.")
    if not (path.name.startswith("queue_mood-") and path.suffix == ".whl"):
        raise UserError(f"--wheel {path} is not a queue_mood-*.whl file; {advice}.")
    try:
        with zipfile.ZipFile(path) as whl:
            names = whl.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"--wheel {path} is not a wheel (not a zip archive); {advice}.") from exc
    if not any(re.fullmatch(r"[^/]+\.dist-info/METADATA", n) for n in names):
        raise UserError(f"--wheel {path} is not a wheel (it holds no .dist-info/METADATA); {advice}.")


def _packaged_files(source: Path) -> list[Path]:
    """The checkout's files a wheel build reads."""
    files = [source / name for name in SOURCE_FILES if (source / name).is_file()]
    for pkg in _package_dirs(source):
        files += [p for p in sorted(pkg.rglob("*")) if p.is_file() and not any(
            fnmatch.fnmatch(part, pat) for part in p.relative_to(pkg).parts for pat in NOT_PACKAGED)]
    return files


def source_epoch(source: Path) -> int:
    """The date (SOURCE_DATE_EPOCH) the bundle's wheel and .tar.gz give their files, so that two
    bundles of one commit hold the same bytes however far apart they are made: the commit's time
    in a git checkout, else the newest change among the files the wheel packages; a SOURCE_DATE_EPOCH
    the builder set wins, as reproducible-builds.org's convention asks (a distribution's own date)."""
    given = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if given.isdigit():
        return int(given)
    when = commit_time(source)
    return when if when is not None else int(max(p.stat().st_mtime for p in _packaged_files(source)))


def build_wheel(source: Path, out_dir: Path, epoch: int) -> Path:
    """The project's wheel, built from a clean copy of the checkout (never writes into it), its
    files dated `epoch` and their modes independent of the umask the checkout was made under."""
    with tempfile.TemporaryDirectory(prefix="qm-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, src / name)
        for pkg in _package_dirs(source):
            shutil.copytree(pkg, src / pkg.name, ignore=shutil.ignore_patterns(*NOT_PACKAGED))
        for p in src.rglob("*"):  # the wheel records each file's mode: 0664 under umask 002, 0644 under 022
            p.chmod(0o755 if p.is_dir() or p.stat().st_mode & 0o111 else 0o644)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(out_dir), str(src)]
        if _local_backend_ok(source):  # build offline, without an isolated build env
            cmd.insert(4, "--no-build-isolation")
        # the wheel package dates every file SOURCE_DATE_EPOCH (else each its mtime, .dist-info the build's time)
        proc = subprocess.run(cmd, capture_output=True, text=True, umask=0o022,
                              env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
        if proc.returncode != 0:
            # pip ends a full disk with "Failed to build one or more wheels", as if the checkout were
            # at fault: its wheel goes into the bundle beside --out, which run() says to free or move
            for code in (errno.ENOSPC, errno.EDQUOT):
                if f"[Errno {code}]" in proc.stderr + proc.stdout:
                    raise OSError(code, os.strerror(code), str(out_dir))
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"Building the queue-mood wheel from {source} failed ({tail[0]}).")
    wheels = sorted(out_dir.glob("queue_mood-*.whl"))
    if not wheels:
        raise UserError(f"Building the queue-mood wheel from {source} made no queue_mood-*.whl.")
    return wheels[-1]


def _wheel_sources(wheel: Path) -> list[str]:
    """The checkout's files the wheel holds (paths relative to the checkout), its metadata left out."""
    with zipfile.ZipFile(wheel) as z:
        return [n for n in z.namelist() if not n.endswith("/") and ".dist-info/" not in n]


# -- the systemd unit -------------------------------------------------------------------

# Keys systemd 252 (Raspberry Pi OS Bookworm) knows, for the sections our unit uses. Keys only
# newer systemd knows (RestartSteps=, RestartMaxDelaySec= from 254) are deliberately absent.
UNIT_KEYS = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds",
             "Conflicts", "Before", "After", "OnFailure", "OnSuccess", "StartLimitIntervalSec", "StartLimitBurst",
             "StartLimitAction", "ConditionPathExists", "ConditionPathIsDirectory", "ConditionFileNotEmpty",
             "ConditionFileIsExecutable", "AssertPathExists", "DefaultDependencies"},
    "Service": {"Type", "User", "Group", "SupplementaryGroups", "DynamicUser", "ExecStart", "ExecStartPre",
                "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload", "WorkingDirectory", "Environment",
                "EnvironmentFile", "Restart", "RestartSec", "RestartPreventExitStatus", "RestartForceExitStatus",
                "SuccessExitStatus", "TimeoutStartSec", "TimeoutStopSec", "TimeoutSec", "WatchdogSec", "NotifyAccess",
                "KillMode", "KillSignal", "RemainAfterExit", "StateDirectory", "StateDirectoryMode",
                "CacheDirectory", "LogsDirectory", "RuntimeDirectory", "ConfigurationDirectory", "StandardOutput",
                "StandardError", "StandardInput", "SyslogIdentifier", "NoNewPrivileges", "ProtectSystem",
                "ProtectHome", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "PrivateTmp",
                "PrivateDevices", "PrivateNetwork", "DeviceAllow", "DevicePolicy", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
                "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictSUIDSGID", "RestrictRealtime",
                "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute", "RestrictAddressFamilies",
                "SystemCallArchitectures", "SystemCallFilter", "CapabilityBoundingSet", "AmbientCapabilities",
                "UMask", "Nice", "CPUSchedulingPolicy", "IOSchedulingClass", "MemoryMax", "MemoryHigh",
                "CPUQuota", "LimitNOFILE", "LimitCORE", "OOMScoreAdjust"},
    "Install": {"WantedBy", "RequiredBy", "Alias", "Also"},
}
REQUIRED_UNIT_KEYS = (("Unit", "Description"), ("Service", "ExecStart"), ("Service", "User"),
                      ("Service", "Restart"), ("Service", "RestartSec"), ("Install", "WantedBy"))
_BOOL_KEYS = {"NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
              "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictSUIDSGID",
              "RestrictRealtime", "LockPersonality", "MemoryDenyWriteExecute", "RemainAfterExit", "DynamicUser",
              "DefaultDependencies"}
_BOOLS = {"1", "0", "yes", "no", "true", "false", "on", "off"}
_RESTART = {"no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog"}
_TIME = re.compile(r"^(infinity|(\d+(\.\d+)?\s*(us|ms|s|sec|m|min|h|hr|d)?\s*)+)$")


def parse_unit(text: str) -> dict[str, list[tuple[int, str, str]]]:
    """{section: [(line number, key, value)]} of a systemd unit file; bad lines raise ValueError."""
    sections: dict[str, list[tuple[int, str, str]]] = {}
    current = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):  # continuation lines
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"line {number}: bad section header {line!r}")
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        if current is None:
            raise ValueError(f"line {number}: {line!r} comes before any [Section]")
        if "=" not in line:
            raise ValueError(f"line {number}: {line!r} is not Key=Value")
        key, value = (part.strip() for part in line.split("=", 1))
        sections[current].append((number, key, value))
    return sections


def check_unit(text: str) -> list[str]:
    """Problems systemd 252 would report (or that break the service); [] when the unit is fine."""
    try:
        sections = parse_unit(text)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    for section, entries in sections.items():
        known = UNIT_KEYS.get(section)
        if known is None:
            problems.append(f"unknown section [{section}]")
            continue
        for number, key, value in entries:
            if key not in known:
                problems.append(f"line {number}: unknown key {key!r} in [{section}]")
            elif key in _BOOL_KEYS and value.lower() not in _BOOLS:
                problems.append(f"line {number}: {key}={value} is not a boolean")
            elif key == "Restart" and value not in _RESTART:
                problems.append(f"line {number}: Restart={value} is not one of {', '.join(sorted(_RESTART))}")
            elif key in ("RestartSec", "StartLimitIntervalSec", "TimeoutStopSec", "TimeoutStartSec") \
                    and not _TIME.match(value):
                problems.append(f"line {number}: {key}={value} is not a time span")
            elif key == "ExecStart" and not value.lstrip("-@:+!").startswith("/"):
                problems.append(f"line {number}: ExecStart must start with an absolute path")
    have = {(s, k) for s, entries in sections.items() for _, k, _ in entries}
    problems += [f"missing {k}= in [{s}]" for s, k in REQUIRED_UNIT_KEYS if (s, k) not in have]
    return problems


# -- the bundle -------------------------------------------------------------------------


def readme_text(manifest: dict, archive: str | None, folder: str) -> str:
    """The note for the person at the store; archive is the .tar.gz name (None: a folder bundle)."""
    # The old folder goes first: unpacked or copied over an older bundle's, the new one would keep
    # its files (a second wheel, which install.sh refuses; detector files no longer configured).
    if archive:
        copy = f"scp {archive} pi@HOST:\n  ssh pi@HOST 'rm -rf {BUNDLE_NAME} && tar xzf {archive} && sudo ./{BUNDLE_NAME}/install.sh'"
    else:
        copy = f"ssh pi@HOST 'rm -rf {folder}'\n  scp -r {folder} pi@HOST:\n  ssh pi@HOST 'sudo bash ./{folder}/install.sh'"
    m = manifest["model"]
    commit = f", commit {manifest['commit']}" if manifest.get("commit") else ""
    acc = m.get("accuracy")
    model_line = f"{m['architecture'] or 'model'}" + (f", accuracy {acc:.1%} ({m['accuracy_of']})" if acc else "")
    loosened = m.get("int8_parity_loosened")
    gate_line = (f"WARNING: the model passed its int8 parity gate only at {loosened}, looser than the project's "
                 "gate.\n" if loosened else "")
    return f"""Queue-mood monitor: installation bundle
=======================================
Made {manifest['created']} by `edge bundle` (queue-mood {manifest['version']}{commit}).
Model: {model_line}; sha256 {m['sha256'][:12]}.
{gate_line}
The Raspberry Pi watches the checkout queue with its camera, recognises facial
expressions and raises a local alert (log, LED/buzzer, webhook or MQTT, as set in
config.toml) when many people in the queue look unhappy. No image or video is stored
or sent anywhere: only counts leave the Pi.

Needs: a Raspberry Pi 4 or 5 with Raspberry Pi OS 64-bit (Trixie or Bookworm), a camera, and an
internet connection while installing.

Install (from a computer on the same network; HOST is the Pi's name, e.g. queuepi.local):
  {copy}
It takes a few minutes. The same commands later, with a newer bundle, upgrade the
program and the model and keep your settings and any undelivered alerts. Keep the
rm -rf step: a new bundle unpacked over the old one's folder mixes with its files.

Afterwards, on the Pi:
  Is it running?        systemctl status queue-mood
  What is it doing?     journalctl -u queue-mood -f
  Check everything:     sudo /opt/queue-mood/venv/bin/edge doctor --config /etc/queue-mood/config.toml
  Settings:             sudo nano /etc/queue-mood/config.toml
                        (every key explained: /etc/queue-mood/config.example.toml)
                        then: sudo systemctl restart queue-mood
  Stop / start:         sudo systemctl stop queue-mood / sudo systemctl start queue-mood
  Undo an upgrade:      sudo {INSTALL_PREFIX}/bundle.previous/install.sh
                        (the version installed before; settings, alerts and history stay)

Files: program in /opt/queue-mood, settings in /etc/queue-mood/config.toml,
undelivered alerts in /var/lib/queue-mood/spool, logs in the system journal.
The service starts at boot and restarts by itself seconds after it fails; one that cannot
start (a setting it refuses) says why in `systemctl status` and tries again about once a minute.
"""


def _stage(s: BundleSettings, stage: Path, archive: str | None, folder: str) -> BundleResult:
    notes: list[str] = []
    source = Path(s.source).resolve() if s.source else default_source()
    _check_source(source)
    epoch = source_epoch(source)
    cfg = _load_bundle_config(s.config, notes)
    detector_files = _detector_files(cfg)
    model, model_notes = _resolve_model(s.model, cfg)
    cfg_model = cfg.model.path  # before it is rewritten to the installed path
    _rewrite_paths(cfg, notes)

    for sub in ("model", "wheels", *(["detector"] if detector_files else [])):
        (stage / sub).mkdir(parents=True)
    shutil.copy2(model, stage / "model" / MODEL_FILE)
    shutil.copy2(model.with_name(CARD_NAME), stage / "model" / CARD_NAME)
    for name, path in detector_files.items():
        shutil.copy2(path, stage / "detector" / name)
    if s.wheel:
        wheel_src = expand_path(s.wheel)
        check_wheel(wheel_src)
        wheel = Path(shutil.copy2(wheel_src, stage / "wheels" / wheel_src.name))
    else:
        wheel = build_wheel(source, stage / "wheels", epoch)
    for name in DEPLOY_FILES:
        shutil.copy2(source / "deploy" / name, stage / name)
    problems = check_unit((stage / UNIT_NAME).read_text())
    if problems:
        raise UserError(f"deploy/{UNIT_NAME} has problems: {'; '.join(problems)}.")
    (stage / "install.sh").chmod(0o755)

    origin = s.config or "built-in defaults with camera 0"
    (stage / "config.toml").write_text(config_text(cfg, origin))
    (stage / "config.toml").chmod(0o600)
    load_config(stage / "config.toml")  # what we wrote loads (to_toml round trip)
    from edge.configdoc import example_toml

    (stage / "config.example.toml").write_text(example_toml())

    card = load_card(stage / "model" / MODEL_FILE)
    version = wheel.name.split("-")[1]
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # the code the Pi runs (edge.release reads it there): null for a --wheel built elsewhere, or a source not in git
        "commit": None if s.wheel else source_commit(source, _wheel_sources(wheel)),
        "version": version,
        "source": str(source),
        "config_from": origin,
        "model": {"from": str(model), "file": f"model/{MODEL_FILE}", "sha256": sha256_file(stage / "model" / MODEL_FILE),
                  "architecture": card.architecture, "labels": card.labels,
                  **dict(zip(("accuracy", "accuracy_of"), card.edge_accuracy() or (None, None))),
                  "int8_parity": card.parity.get("passed"),
                  # the gate's thresholds (null: a card from before they were recorded) and those looser than the project's
                  "int8_parity_gate": {k: card.parity[k] for k in GATE_KEYS if k in card.parity} or None,
                  "int8_parity_loosened": loosened_gate(card.parity) or None},
        "detector": {"kind": cfg.detector.kind, "variant": getattr(cfg.detector, "variant", None), "files": sorted(detector_files)},
        "wheel": f"wheels/{wheel.name}",
        "install": {"prefix": INSTALL_PREFIX, "config": f"{ETC_DIR}/config.toml", "state": STATE_DIR},
        "files": {f: sha256_file(stage / f) for f in files if f not in SECRET_FILES},
    }
    (stage / "README.txt").write_text(readme_text(manifest, archive, folder))
    manifest["files"]["README.txt"] = sha256_file(stage / "README.txt")
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    notes += [f"Model {model}: {note}." for note in model_notes]  # a float model, a failed gate: as edge run warns
    source = (card.metrics.get("converted_from") or {}).get("model")
    if source and card.source_sha256 and Path(source).is_file() and sha256_file(source) != card.source_sha256:
        notes.append(f"The model was converted from {source}, which has changed since (trained on, or replaced): the "
                     "bundle ships the earlier conversion; re-run `edge convert` to ship the model as it is now.")
    if s.wheel:
        notes.append("With --wheel the bundle records no source commit (MANIFEST.json `commit` null): which commit "
                     "the wheel was built from is not known here; leave --wheel out to build it from this checkout.")
    if not s.model and not cfg_model:  # a retrained model left out by mistake must not go unnoticed
        notes.append(f"Neither --model nor the config's [model] path names a model, so the bundle ships the "
                     f"project's default ({model}); pass --model PATH to ship yours.")
    return BundleResult(path=stage, files=files, notes=notes, epoch=epoch)


def _write_tar(stage: Path, part: Path, epoch: int) -> None:
    """The .tar.gz of the staged bundle, the same bytes for the same files: every member dated
    `epoch` and owned by root (tar.add adds a folder's entries in sorted order), the gzip header
    dated `epoch` too, without a file name."""
    with open(part, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(stage, arcname=BUNDLE_NAME, filter=lambda info: _tar_filter(info, epoch))


def _tar_filter(info: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    info.mtime = epoch  # an int: a float mtime would add a pax header
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isdir() or info.name.endswith(".sh"):
        info.mode = 0o755
    elif info.name.split("/", 1)[-1] in SECRET_FILES:
        info.mode = 0o600
    else:
        info.mode = 0o644
    return info


def _earlier_bundle(archive: Path) -> bool:
    """Whether this .tar.gz is one edge bundle wrote (its manifest in the bundle's top folder)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.getmember(f"{BUNDLE_NAME}/{MANIFEST}")
        return True
    except (tarfile.TarError, OSError, KeyError, EOFError):
        return False


def _earlier_bundle_folder(folder: Path) -> bool:
    """Whether this folder is one edge bundle wrote: its install.sh beside a MANIFEST.json with the
    bundle's keys. A MANIFEST.json of another kind (a web app's, a browser extension's) marks
    someone's own folder, which replacing would delete."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(manifest, dict) and {"files", "install"} <= manifest.keys() and (folder / "install.sh").is_file()


@contextlib.contextmanager
def _stop_signals_unwind():
    """SIGTERM and SIGHUP (the terminal or SSH session closed) end edge bundle as Ctrl-C does,
    through the cleanup: by default they end the process on the spot, and the staging folder
    beside --out stays behind, a half-made bundle with the config's secrets in it."""
    def stop(signum, _frame):
        raise SystemExit(128 + signum)  # the exit status the shell reports for that signal

    main = threading.current_thread() is threading.main_thread()
    taken = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)
             if main and signal.getsignal(sig) == signal.SIG_DFL}  # nohup's ignored SIGHUP stays ignored
    try:
        yield
    finally:
        for sig, handler in taken.items():
            signal.signal(sig, handler)


def run(s: BundleSettings) -> BundleResult:
    """Write the bundle; bad inputs are UserErrors checked before anything is written."""
    out = expand_path(s.out)
    as_tar = out.name.lower().endswith(TAR_SUFFIXES)
    if not as_tar and (other := next((x for x in OTHER_ARCHIVE_SUFFIXES if out.name.lower().endswith(x)), None)):
        raise UserError(f"--out {out} ends in {out.name[-len(other):]}, an archive edge bundle does not write; end it in .tar.gz for "
                        "an archive, or give a folder name.")
    if not as_tar and out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _earlier_bundle_folder(out))):
        raise UserError(f"{out} exists and is not an empty folder or an earlier bundle; choose another --out.")
    if as_tar and out.is_dir():  # found now, not by os.replace after the whole build
        raise UserError(f"--out {out} is a folder, so the .tar.gz cannot be written there; choose another --out "
                        "(or remove that folder).")
    if as_tar and out.exists() and not _earlier_bundle(out):  # someone's own archive, replaced without a word
        raise UserError(f"{out} exists and is not an earlier bundle; choose another --out (or remove that file).")
    try:  # the bundle is staged beside --out, so that folder must be writable
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(prefix=".qm-bundle-", dir=out.parent)
    except OSError as exc:
        raise UserError(f"Cannot write the bundle into the folder {out.parent} ({exc.strerror}); choose another "
                        "--out in a folder you can write to.") from exc
    with _stop_signals_unwind(), staging as tmp:
        try:
            stage = Path(tmp) / BUNDLE_NAME
            stage.mkdir()
            result = _stage(s, stage, out.name if as_tar else None, out.name)
            if as_tar:
                part = Path(tmp) / "bundle.tar.gz"
                _write_tar(stage, part, result.epoch)
                os.chmod(part, 0o600)  # it holds config.toml (0600 inside): the archive must not show it to all
                os.replace(part, out)
                result.files = [f"{BUNDLE_NAME}/{f}" for f in result.files]
            else:
                if out.exists():
                    shutil.rmtree(out)
                os.replace(stage, out)
        except OSError as exc:  # the inputs were checked: mostly the disk beside --out (full, failing)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                fix = f"free some space in {out.parent} or choose another --out"
            else:  # a file that went unreadable meanwhile, a failing disk: name the file
                fix = f"check {exc.filename or out.parent} and run it again"
            raise UserError(f"Writing the bundle {out} failed ({exc.strerror or exc}); {fix}.") from exc
    result.path = out
    result.size_bytes = out.stat().st_size if as_tar else sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return result
