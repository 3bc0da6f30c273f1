"""Deployment: `edge bundle`, `edge doctor`, deploy/install.sh and the systemd unit.

The full install into a Pi-like venv (apt numpy 1.24 + OpenCV 4.6) is the CI lane
.ci/pi_env_lane.sh; these tests are the fast part."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from edge.ops.bundle import BundleSettings, check_unit, parse_unit
from edge.ops.bundle import run as bundle_run
from edge.card import load_card
from edge.config import load_config
from edge.pipeline.detectors.blazeface import MODEL_FILES, find_model
from edge.ops.doctor.board import clock_verdict, governor_verdict, temperature_verdict, throttled_verdict
from edge.ops.doctor.context import FAIL, OK, WARN
from edge.ops.doctor.libraries import opencv_verdict
from edge.ops.doctor.sinks import sink_verdict
from edge.service.notify import FAILED_START_WAIT_S
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "queue-mood.service"
SCRIPTS = [DEPLOY / "install.sh", DEPLOY / "check_aarch64_wheels.sh", REPO / ".ci" / "pi_env_lane.sh",
           REPO / ".ci" / "trixie_lane.sh"]

needs_blazeface = pytest.mark.skipif(find_model("face_detection_full_range.tflite") is None,
                                     reason="BlazeFace models missing from edge/pipeline/detectors/models (reinstall queue-mood)")


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_one_sentence(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc)
    for needle in needles:
        assert needle in line


@pytest.fixture(scope="module")
def bundled_model(shipped_model) -> Path:
    return shipped_model


@pytest.fixture(scope="module")
def store_bundle(tmp_path_factory, bundled_model):
    """A .tar.gz bundle made by the CLI from the shipped model and a store config, unpacked."""
    root = tmp_path_factory.mktemp("bundle")
    cfg = root / "store.toml"
    cfg.write_text('device_name = "till-3"\n[source]\ncamera = 1\n[sinks.mqtt]\nhost = "broker.local"\n'
                   '[sinks.jsonl]\n')
    tar_path = root / "till-3.tar.gz"  # README.txt must name this file, whatever it is called
    proc = run_cli("bundle", "--model", bundled_model, "--config", cfg, "--out", tar_path)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tar_path) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
        tar.extractall(root / "x")
    return {"dir": root / "x" / "queue-mood-bundle", "tar": tar_path, "modes": modes, "stdout": proc.stdout}


# -- edge bundle --------------------------------------------------------------------------


@needs_blazeface
def test_bundle_holds_everything_the_pi_needs(store_bundle, bundled_model):
    b = store_bundle["dir"]
    for rel in ("README.txt", "install.sh", "queue-mood.service", "config.toml", "MANIFEST.json",
                "model/model_int8.tflite", "model/model.json", "config.example.toml"):
        assert (b / rel).is_file(), rel
    assert not (b / "detector").exists()  # BlazeFace ships in the wheel
    assert (b / "model/model_int8.tflite").read_bytes() == bundled_model.read_bytes()
    assert (b / "install.sh").read_text() == (DEPLOY / "install.sh").read_text()
    assert (b / "queue-mood.service").read_text() == UNIT.read_text()
    assert store_bundle["modes"]["queue-mood-bundle/install.sh"] & stat.S_IXUSR
    # the config may hold the page's token and MQTT/webhook passwords: its owner's eyes only
    assert store_bundle["modes"]["queue-mood-bundle/config.toml"] == 0o600
    assert stat.S_IMODE(store_bundle["tar"].stat().st_mode) == 0o600  # else anyone here reads it out of the archive
    assert store_bundle["modes"]["queue-mood-bundle/config.example.toml"] == 0o644
    (wheel,) = (b / "wheels").glob("queue_mood-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"edge/cli.py", "edge/ops/doctor/__init__.py", "edge/ops/bundle.py", "edge/pipeline/detectors/blazeface.py",
            "edge/pipeline/detectors/models/face_detection_full_range.tflite",
            "edge/pipeline/detectors/models/face_detection_short_range.tflite",
            "edge/pipeline/detectors/models/LICENSE", "edge/pipeline/detectors/models/PROVENANCE.md"} <= names
    assert not any(n.endswith("_sparse.tflite") or "landmark" in n for n in names)  # only the two used
    assert "edge = edge.__main__:main" in entry_points
    manifest = json.loads((b / "MANIFEST.json").read_text())
    assert manifest["wheel"] == f"wheels/{wheel.name}"
    assert set(manifest["files"]) >= {"install.sh", "model/model_int8.tflite", "README.txt"}
    readme = (b / "README.txt").read_text()
    assert "scp till-3.tar.gz pi@HOST:" in readme and "tar xzf till-3.tar.gz" in readme
    assert "journalctl -u queue-mood" in readme
    card_acc = load_card(bundled_model).edge_accuracy()
    assert f"accuracy {card_acc[0]:.1%} ({card_acc[1]})" in readme
    # the source commit beside the date, so two bundles of one day tell apart (the Pi reads it back: test_release.py)
    if shutil.which("git") and (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert manifest["commit"] in (head[:12], head[:12] + "-dirty")
        assert f"(queue-mood {manifest['version']}, commit {manifest['commit']})" in readme
    else:  # a source copy that is not a git checkout: nothing to record, and no error
        assert manifest["commit"] is None


@needs_blazeface
def test_bundled_config_loads_and_points_at_the_installed_files(store_bundle):
    cfg = load_config(store_bundle["dir"] / "config.toml")
    assert cfg.model.path == "/opt/queue-mood/model/model_int8.tflite"
    assert cfg.detector.model == ""  # the wheel's BlazeFace
    assert cfg.sinks.spool_dir == "/var/lib/queue-mood/spool"
    assert cfg.sinks.jsonl.path == "/var/lib/queue-mood/alerts.jsonl"
    assert (cfg.device_name, cfg.source.camera, cfg.sinks.mqtt.host) == ("till-3", 1, "broker.local")
    # the sinks it leaves off are there as commented-out examples that load once uncommented
    from edge.configdoc import uncomment

    text = (store_bundle["dir"] / "config.toml").read_text()
    assert "# [sinks.webhook]" in text and "# [sinks.mqtt]" not in text
    (store_bundle["dir"].parent / "all-sinks.toml").write_text(uncomment(text))
    full = load_config(store_bundle["dir"].parent / "all-sinks.toml")
    assert full.sinks.webhook.url and full.sinks.command.argv and full.sinks.gpio is not None
    assert full.sinks.mqtt.host == "broker.local"


@needs_blazeface
def test_bundled_files_load_together_once_installed(store_bundle, tmp_path):
    """What install.sh does with the paths (a prefix other than /opt/queue-mood), then the
    edge run's own loader on the result."""
    from edge.service.app import load_parts

    b, prefix = store_bundle["dir"], tmp_path / "opt" / "queue-mood"
    shutil.copytree(b / "model", prefix / "model")
    text = (b / "config.toml").read_text().replace("/opt/queue-mood", str(prefix))
    text = text.replace("/var/lib/queue-mood", str(tmp_path / "state"))
    (tmp_path / "config.toml").write_text(text)
    classifier, detector = load_parts(load_config(tmp_path / "config.toml"))
    assert classifier.path == prefix / "model" / "model_int8.tflite"
    inner = getattr(detector, "inner", detector)  # the default config tiles the frame
    assert inner.model_path == find_model(MODEL_FILES[inner.variant])  # the wheel's


def test_a_detector_file_the_config_names_is_bundled_and_pointed_at(store_bundle, bundled_model, tmp_path):
    (wheel,) = (store_bundle["dir"] / "wheels").glob("*.whl")
    cfg = tmp_path / "store.toml"
    cfg.write_text(f'[detector]\nvariant = "short_range"\nmodel = "{find_model("face_detection_short_range.tflite")}"\n')
    out = tmp_path / "b"
    result = bundle_run(BundleSettings(out=str(out), model=str(bundled_model), config=str(cfg), wheel=str(wheel)))
    assert "detector/face_detection_short_range.tflite" in result.files
    assert load_config(out / "config.toml").detector.model == "/opt/queue-mood/detector/face_detection_short_range.tflite"


def test_relative_paths_in_a_bundled_config_go_under_the_pi_state_folder(tmp_path, bundled_model):
    """A relative spool, history or events file meant the service's working folder on the Pi
    (/var/lib/queue-mood); the bundle must not turn it into this machine's config folder."""
    from edge.ops.bundle import _load_bundle_config, _rewrite_paths

    shutil.copy(bundled_model, tmp_path / "model_int8.tflite")
    shutil.copy(bundled_model.with_name("model.json"), tmp_path / "model.json")
    (tmp_path / "store.toml").write_text('[model]\npath = "model_int8.tflite"\n[source]\npath = "queue.mp4"\n'
                                         '[sinks]\nspool_dir = "spool"\n[sinks.jsonl]\npath = "events/alerts.jsonl"\n'
                                         '[status]\nhistory_db = "history.db"\n')
    notes: list[str] = []
    cfg = _load_bundle_config(str(tmp_path / "store.toml"), notes)
    assert cfg.model.path == str(tmp_path / "model_int8.tflite")  # read on this machine, from the config's folder
    _rewrite_paths(cfg, notes)
    assert (cfg.sinks.spool_dir, cfg.sinks.jsonl.path, cfg.status.history_db, cfg.source.path) == (
        "/var/lib/queue-mood/spool", "/var/lib/queue-mood/events/alerts.jsonl", "/var/lib/queue-mood/history.db",
        "/var/lib/queue-mood/queue.mp4")
    assert not any("outside" in n for n in notes), notes
    (tmp_path / "store.toml").write_text(f'[status]\nhistory_db = "{tmp_path / "h.db"}"\n')
    cfg, notes = _load_bundle_config(str(tmp_path / "store.toml"), []), []
    _rewrite_paths(cfg, notes)
    assert any(n.startswith(f"status.history_db {tmp_path / 'h.db'} is outside /var/lib/queue-mood") for n in notes)


@pytest.mark.slow
@needs_blazeface
def test_default_config_bundle_into_a_folder(store_bundle, bundled_model, tmp_path):
    (wheel,) = (store_bundle["dir"] / "wheels").glob("*.whl")
    out = tmp_path / "pi-bundle"
    result = bundle_run(BundleSettings(out=str(out), model=str(bundled_model), wheel=str(wheel)))
    assert result.path == out and "config.toml" in result.files
    assert not [n for n in result.notes if "ships the project's default" in n]
    assert stat.S_IMODE((out / "config.toml").stat().st_mode) == 0o600
    cfg = load_config(out / "config.toml")
    assert cfg.source.camera == 0 and not cfg.source.path
    assert "scp -r pi-bundle pi@HOST:" in (out / "README.txt").read_text()
    # a wheel built elsewhere: which commit it holds is not known here, so none is recorded, and the note says why
    assert json.loads((out / "MANIFEST.json").read_text())["commit"] is None
    assert [n for n in result.notes if n.startswith("With --wheel the bundle records no source commit")]
    bundle_run(BundleSettings(out=str(out), model=str(bundled_model), wheel=str(wheel)))  # an earlier bundle: replaced
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    proc = run_cli("bundle", "--model", bundled_model, "--wheel", wheel, "--out", foreign)
    assert_one_sentence(proc, "photos")
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]


@pytest.mark.slow
@needs_blazeface
def test_a_bundle_that_falls_back_to_the_default_model_says_so(store_bundle, tmp_path):
    """Without --model and a config's [model] path the bundle ships the project's default model:
    a retrained model forgotten on the command line must show, not reach the Pis unnoticed."""
    from edge.models import default_model_path

    (wheel,) = (store_bundle["dir"] / "wheels").glob("*.whl")
    proc = run_cli("bundle", "--wheel", wheel, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert f"note: Neither --model nor the config's [model] path names a model, so the bundle ships the project's " \
           f"default ({default_model_path()}); pass --model PATH to ship yours." in proc.stdout
    cfg = tmp_path / "store.toml"
    cfg.write_text(f'[model]\npath = "{default_model_path()}"\n')
    proc = run_cli("bundle", "--wheel", wheel, "--config", cfg, "--out", tmp_path / "c")
    assert proc.returncode == 0 and "ships the project's default" not in proc.stdout, proc.stderr


@pytest.mark.slow
@needs_blazeface
def test_a_bundle_of_a_model_whose_keras_file_changed_since_its_conversion_says_so(store_bundle, bundled_model,
                                                                                    tmp_path):
    """A run trained on (`--resume --epochs`) after its conversion: its int8 folder still holds the
    earlier model, which the bundle would ship without a word."""
    from edge.card import sha256_file

    (wheel,) = (store_bundle["dir"] / "wheels").glob("*.whl")
    keras_file = tmp_path / "run" / "model.keras"
    keras_file.parent.mkdir()
    keras_file.write_bytes(b"the model as converted")
    model = tmp_path / "int8" / "model_int8.tflite"
    model.parent.mkdir()
    shutil.copy(bundled_model, model)
    card = json.loads(bundled_model.with_name("model.json").read_text())
    card["source_sha256"] = sha256_file(keras_file)
    card["metrics"]["converted_from"] = {**card["metrics"].get("converted_from", {}), "model": str(keras_file)}
    model.with_name("model.json").write_text(json.dumps(card))
    note = f"note: The model was converted from {keras_file}, which has changed since"
    proc = run_cli("bundle", "--model", model, "--wheel", wheel, "--out", tmp_path / "b")
    assert proc.returncode == 0 and note not in proc.stdout, proc.stderr
    keras_file.write_bytes(b"the model trained on")
    proc = run_cli("bundle", "--model", model, "--wheel", wheel, "--out", tmp_path / "c")
    assert proc.returncode == 0 and note in proc.stdout and "re-run `edge convert`" in proc.stdout, proc.stderr


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    (b"hello", "is not a wheel (not a zip archive)"),
    ({"queue_mood/__init__.py": ""}, "is not a wheel (it holds no .dist-info/METADATA)"),
])
def test_a_wheel_that_is_not_one_is_refused(tmp_path, content, needle):
    wheel = tmp_path / "queue_mood-0.1-py3-none-any.whl"
    if isinstance(content, bytes):
        wheel.write_bytes(content)
    elif content is not None:
        with zipfile.ZipFile(wheel, "w") as z:
            for name, text in content.items():
                z.writestr(name, text)
    out = tmp_path / "b.tar.gz"
    proc = run_cli("bundle", "--wheel", wheel, "--out", out)
    assert_one_sentence(proc, f"--wheel {wheel} {needle}", "leave --wheel out")
    assert not out.exists()


def test_a_wheel_with_its_metadata_passes_the_wheel_check(tmp_path):
    from edge.ops.bundle import check_wheel

    wheel = tmp_path / "queue_mood-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("queue_mood-0.1.dist-info/METADATA", "Name: queue-mood\n")
    check_wheel(wheel)


def test_a_folder_with_another_tools_manifest_is_not_taken_for_an_earlier_bundle(tmp_path):
    """Found in an audit: any MANIFEST.json marked --out as an earlier bundle, so a web app's folder
    was deleted and replaced by the bundle."""
    site = tmp_path / "shop-site"
    site.mkdir()
    (site / "MANIFEST.json").write_text('{"name": "shop", "start_url": "/"}\n')
    (site / "index.html").write_text("<html></html>\n")
    proc = run_cli("bundle", "--out", site)
    assert_one_sentence(proc, f"{site} exists and is not an empty folder or an earlier bundle")
    assert sorted(p.name for p in site.iterdir()) == ["MANIFEST.json", "index.html"]


@pytest.mark.parametrize("name", ["b9.zip", "b9.tar", "b9.tar.xz"])
def test_an_out_named_as_an_archive_bundle_cannot_write_is_refused(tmp_path, name):
    proc = run_cli("bundle", "--out", tmp_path / name)
    assert_one_sentence(proc, f"--out {tmp_path / name} ends in .{name.rsplit('.', 1)[1]}", "end it in .tar.gz")
    assert not (tmp_path / name).exists()


@pytest.mark.slow
def test_an_archive_that_is_not_an_earlier_bundle_is_not_replaced(store_bundle, bundled_model, tmp_path):
    """Found in a review: `--out mine.tar.gz` replaced someone's own archive without a word."""
    import shutil

    mine = tmp_path / "mine.tar.gz"
    with tarfile.open(mine, "w:gz") as tar:
        tar.add(store_bundle["dir"] / "README.txt", arcname="notes/README.txt")
    notes = tmp_path / "notes.tar.gz"
    notes.write_text("not a tar at all\n")
    for out in (mine, notes):
        before = out.read_bytes()
        proc = run_cli("bundle", "--model", bundled_model, "--out", out)
        assert_one_sentence(proc, f"{out} exists and is not an earlier bundle")
        assert out.read_bytes() == before
    earlier = shutil.copy(store_bundle["tar"], tmp_path / "till-3.tar.gz")  # an earlier bundle: replaced
    assert run_cli("bundle", "--model", bundled_model, "--out", earlier).returncode == 0


def bundle_contents(out: Path) -> tuple[dict, list[str], int, dict]:
    """A .tar.gz bundle's members' headers {name: (mtime, mode, owner)}, their order, the gzip
    header's date and {file: sha256 of its bytes}."""
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        hashes = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in members if m.isfile()}
    headers = {m.name: (m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in members}
    return headers, [m.name for m in members], int.from_bytes(out.read_bytes()[4:8], "little"), hashes


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_two_bundles_of_the_same_sources_hold_the_same_bytes(bundled_model, tmp_path, monkeypatch):
    """A store checks the bundle on its Pi against head office's by sha256: two bundles of one
    commit made a minute apart, the second from a checkout made later under another umask, hold the
    same wheel, config, install.sh and model bytes; only MANIFEST.json and README.txt date them."""
    from datetime import datetime, timedelta, timezone

    import edge.ops.bundle as bundle_mod

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # a builder's own date would win over the commit's
    src = tmp_path / "src"  # a git checkout of these sources, committed at a known time
    shutil.copytree(DEPLOY, src / "deploy")
    for name in bundle_mod.SOURCE_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for pkg in bundle_mod._package_dirs(REPO):
        shutil.copytree(pkg, src / pkg.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    committed = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_COMMITTER_DATE": committed.isoformat()}
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-q", "-m", "release")):
        subprocess.run(["git", "-C", str(src), *args], env=env, check=True, capture_output=True)
    cfg = tmp_path / "store.toml"
    cfg.write_text('device_name = "till-3"\n[sinks.mqtt]\nhost = "broker.local"\n')

    def bundle(folder: str):
        out = tmp_path / folder / "till-3.tar.gz"  # one name: README.txt names the archive
        bundle_run(BundleSettings(out=str(out), model=str(bundled_model), config=str(cfg), source=str(src)))
        return bundle_contents(out)

    first = bundle("head-office")
    for p in src.rglob("*"):  # the same commit checked out a minute later under umask 002
        if ".git" not in p.relative_to(src).parts:
            st = p.stat()
            p.chmod(stat.S_IMODE(st.st_mode) | 0o020)
            os.utime(p, (st.st_atime + 61, st.st_mtime + 61))

    class MinuteLater(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(seconds=61)

    monkeypatch.setattr(bundle_mod, "datetime", MinuteLater)
    umask = os.umask(0o002)
    try:
        second = bundle("store")
    finally:
        os.umask(umask)
    (headers, order, gzip_date, files), (headers2, order2, gzip_date2, files2) = first, second
    dated = {f"{bundle_mod.BUNDLE_NAME}/{name}" for name in ("MANIFEST.json", "README.txt")}
    assert files.keys() == files2.keys()
    assert sorted(f for f in files if files[f] != files2[f] and f not in dated) == []
    assert any(f.endswith(".whl") for f in files.keys() - dated)  # the wheel is among those compared
    assert headers == headers2 and order == order2  # the archive's headers too: dated by the commit, owned by root
    assert {h[0] for h in headers.values()} == {gzip_date} == {gzip_date2} == {int(committed.timestamp())}
    assert {h[2:] for h in headers.values()} == {(0, 0, "root", "root")}
    with tarfile.open(tmp_path / "store" / "till-3.tar.gz") as tar:
        manifest2 = json.load(tar.extractfile(f"{bundle_mod.BUNDLE_NAME}/MANIFEST.json"))
    with tarfile.open(tmp_path / "head-office" / "till-3.tar.gz") as tar:
        manifest = json.load(tar.extractfile(f"{bundle_mod.BUNDLE_NAME}/MANIFEST.json"))
    assert manifest["created"] != manifest2["created"]  # each bundle still says when it was made


def test_a_source_outside_git_dates_its_wheel_by_its_newest_packaged_file(tmp_path, monkeypatch):
    from edge.ops.bundle import source_epoch

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)

    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[tool.setuptools.packages.find]\ninclude = ["pkg*"]\n')
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"")  # not packaged: its date does not count
    (src / "notes.txt").write_text("")  # nor a file the wheel does not read
    for path, when in (("pyproject.toml", 1_700_000_000), ("pkg/__init__.py", 1_700_000_500),
                       ("pkg/__pycache__/x.pyc", 1_800_000_000), ("notes.txt", 1_800_000_000)):
        os.utime(src / path, (when, when))
    assert source_epoch(src) == 1_700_000_500
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")  # the builder's own date wins
    assert source_epoch(src) == 1_600_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")  # not a date: ignored
    assert source_epoch(src) == 1_700_000_500


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_bundle_stopped_by_a_hang_up_or_sigterm_leaves_nothing_beside_out(tmp_path, sig):
    """Found in an audit: Ctrl-C removed the half-made bundle, but closing the terminal (SIGHUP) or a
    SIGTERM left the hidden staging folder beside --out, the config's secrets in it."""
    import sys
    import time

    out = tmp_path / "out"
    out.mkdir()
    cfg = tmp_path / "store.toml"
    cfg.write_text('[status]\nhost = "0.0.0.0"\ntoken = "s3cret-token-0123456789"\n')
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "bundle", "--config", str(cfg), "--out",
                             str(out / "b.tar.gz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))  # as from a terminal, not nohup
    try:
        while not list(out.glob(".qm-bundle-*/queue-mood-bundle/model/model.json")):  # then the wheel is built
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(sig)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig
    assert list(out.iterdir()) == []


def test_bad_model_path_is_one_sentence(tmp_path):
    out = tmp_path / "b.tar.gz"
    proc = run_cli("bundle", "--model", tmp_path / "missing.tflite", "--out", out)
    assert_one_sentence(proc, "missing.tflite", "does not exist")
    assert not out.exists()


@pytest.mark.parametrize("text, needle", [
    ("[source]\ncamera = 0\ncolour = 'red'\n", "source.colour"),
    ("[alert]\nraise_share = 2.0\n", "alert.raise_share"),
    ("[source\n", "not valid TOML"),
    ("[detector]\nkind = 'yunet'\n", "yunet"),
    (f"[status]\nalert_advice = '{'Call someone. ' * 15}'\n", "status.alert_advice"),
])
def test_bad_config_is_one_sentence(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    proc = run_cli("bundle", "--config", cfg, "--out", tmp_path / "b.tar.gz")
    assert_one_sentence(proc, needle)
    assert not (tmp_path / "b.tar.gz").exists()


def test_out_in_a_read_only_folder_is_one_sentence(tmp_path):
    from tests.test_reliability import tmpfs

    with tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        proc = run_cli("bundle", "--out", disk / "b.tar.gz")
    assert_one_sentence(proc, str(disk), "choose another --out")


@pytest.mark.slow
def test_out_on_a_disk_too_full_for_the_wheel_says_so_not_that_the_build_failed(tmp_path):
    """Found in an audit: pip's copy of the wheel into the bundle ran out of space, and the sentence
    blamed the checkout ("Building the queue-mood wheel from ... failed")."""
    from tests.test_reliability import tmpfs

    with tmpfs(tmp_path / "full", "size=2m") as disk:  # room for the model, not the wheel
        proc = run_cli("bundle", "--out", disk / "b.tar.gz")
        left = list(disk.iterdir())
    assert_one_sentence(proc, "No space left on device", f"free some space in {disk}")
    assert not left


def test_missing_config_file_is_one_sentence(tmp_path):
    proc = run_cli("bundle", "--config", tmp_path / "nope.toml", "--out", tmp_path / "b")
    assert_one_sentence(proc, "nope.toml")


def test_model_and_card_that_do_not_belong_together_are_refused(tmp_path, bundled_model):
    shutil.copy(bundled_model, tmp_path / "model_int8.tflite")
    card = json.loads((bundled_model.with_name("model.json")).read_text())
    card["model_sha256"] = "0" * 64
    (tmp_path / "model.json").write_text(json.dumps(card))
    proc = run_cli("bundle", "--model", tmp_path / "model_int8.tflite", "--out", tmp_path / "b.tar.gz")
    assert_one_sentence(proc, "sha256")


# -- edge doctor --------------------------------------------------------------------------


def doctor_config(tmp_path: Path) -> Path:
    import cv2
    import numpy as np

    video = tmp_path / "queue.png"  # one image, a one-frame recording: the doctor reads its frame as edge run does
    cv2.imwrite(str(video), np.full((240, 320, 3), 90, np.uint8))
    cfg = tmp_path / "doctor.toml"
    cfg.write_text(f'[source]\npath = "{video}"\n[sinks]\nspool_dir = "{tmp_path / "spool"}"\n'
                   f'[sinks.jsonl]\npath = "{tmp_path / "alerts.jsonl"}"\n[status]\nport = 0\n')
    return cfg


def test_doctor_reports_runtime_and_model_ok(tmp_path, bundled_model):
    proc = run_cli("doctor", "--model", bundled_model, "--config", doctor_config(tmp_path), "--json")
    rep = json.loads(proc.stdout)
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["tflite runtime"]["status"] == OK
    assert checks["model"]["status"] == OK and "dummy inference ran" in checks["model"]["detail"]
    acc, what = load_card(bundled_model).edge_accuracy()
    assert f"accuracy {acc:.1%} ({what})" in checks["model"]["detail"]
    assert checks["config"]["status"] == OK
    assert checks["camera"]["status"] == OK and "skipped" in checks["camera"]["detail"]
    assert checks["sink jsonl"]["status"] == OK
    assert all(c["status"] in (OK, WARN, FAIL) for c in rep["checks"])
    assert proc.returncode == (0 if rep["ok"] else 1)
    assert rep["ok"] == (rep["counts"][FAIL] == 0)
    assert not (tmp_path / "spool").exists()  # the doctor writes nothing to the spool


def test_doctor_warns_about_a_model_that_failed_the_parity_gate(tmp_path, bundled_model):
    shutil.copy(bundled_model, tmp_path / "model_int8.tflite")
    card = json.loads(bundled_model.with_name("model.json").read_text())
    card["parity"]["passed"] = False
    (tmp_path / "model.json").write_text(json.dumps(card))
    proc = run_cli("doctor", "--model", tmp_path / "model_int8.tflite", "--config", doctor_config(tmp_path), "--json")
    model = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["model"]
    assert model["status"] == WARN and "parity gate" in model["detail"]


def loosened_copy(tmp_path: Path, model: Path, **gate) -> Path:
    """A copy of the model whose card says it passed convert's gate at these thresholds."""
    folder = tmp_path / "loosened"
    folder.mkdir()
    shutil.copy(model, folder / "model_int8.tflite")
    card = json.loads(model.with_name("model.json").read_text())
    card["parity"].update(gate)
    (folder / "model.json").write_text(json.dumps(card))
    return folder / "model_int8.tflite"


def test_doctor_warns_about_a_model_that_passed_only_a_loosened_gate(tmp_path, bundled_model):
    """A card passed at --max-drop 100 was an OK model line, as if it had passed the project's gate."""
    model = loosened_copy(tmp_path, bundled_model, max_drop_pp=100, min_agreement=0.98)
    proc = run_cli("doctor", "--model", model, "--config", doctor_config(tmp_path), "--json")
    line = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["model"]
    assert line["status"] == WARN
    assert "passed convert's int8 parity gate only at --max-drop 100 (default 0.5), looser than" in line["detail"]


@needs_blazeface
def test_a_bundle_of_a_model_that_passed_only_a_loosened_gate_says_so(store_bundle, bundled_model, tmp_path):
    """A card passed at --max-drop 100 --min-agreement 0 was bundled as int8_parity: true, without a word."""
    (wheel,) = (store_bundle["dir"] / "wheels").glob("*.whl")
    model = loosened_copy(tmp_path, bundled_model, max_drop_pp=100, min_agreement=0)
    result = bundle_run(BundleSettings(out=str(tmp_path / "b"), model=str(model), wheel=str(wheel)))
    loosened = "--max-drop 100 (default 0.5) and --min-agreement 0 (default 0.97)"
    assert any(f"passed convert's int8 parity gate only at {loosened}, looser" in n for n in result.notes)
    m = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())["model"]
    assert (m["int8_parity"], m["int8_parity_gate"], m["int8_parity_loosened"]) == (
        True, {"max_drop_pp": 100, "min_agreement": 0}, loosened)
    assert (f"WARNING: the model passed its int8 parity gate only at {loosened}, looser than the project's gate."
            in (tmp_path / "b" / "README.txt").read_text().splitlines())
    shipped = json.loads((store_bundle["dir"] / "MANIFEST.json").read_text())["model"]  # a card from before: as then
    assert (shipped["int8_parity"], shipped["int8_parity_gate"], shipped["int8_parity_loosened"]) == (True, None, None)


def test_doctor_fails_on_a_bad_model_and_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nthreads = 0\n")
    proc = run_cli("doctor", "--model", tmp_path / "missing.tflite", "--config", bad)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.startswith("FAIL") and "config" in line and "model.threads" in line for line in lines)
    assert any(line.startswith("FAIL") and " model " in line and "missing.tflite" in line for line in lines)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("index", ["-1", "1024"])
def test_doctor_refuses_a_camera_index_edge_run_refuses(index):
    proc = run_cli("doctor", "--camera", index)
    assert_one_sentence(proc, f"--camera {index} is not a camera index", "0 to 1023")
    assert proc.stdout == ""  # refused before any check runs


def test_doctor_calls_a_read_only_spool_disk_read_only_not_full(tmp_path):
    from edge.config import Config
    from edge.ops.doctor.context import DoctorSettings, _Context
    from edge.ops.doctor.disk import check_disk
    from tests.test_reliability import tmpfs

    cfg = Config()
    with tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        cfg.sinks.spool_dir = str(disk / "spool")
        ctx = _Context(DoctorSettings())
        check_disk(ctx, cfg)
    (line,) = [c for c in ctx.checks if c.name == "disk"]
    assert line.status == FAIL and "read-only" in line.detail and "free some space" not in line.detail
    # not also "not writable by this user (the service's user may be the one that can: sudo -u ...)": none can
    assert [c for c in ctx.checks if c.name == "spool"] == []


@pytest.mark.parametrize("numpy_v, cv2_v, error, status", [
    ("1.24.2", "4.6.0", "", OK),  # the Pi: both from apt
    ("2.4.6", "4.14.0", "", OK),  # a laptop with wheels
    ("2.1.0", "4.6.0", "", FAIL),  # apt OpenCV 4.6 with a pip numpy 2
    ("2.0.0", "4.9.0.80", "", FAIL),
    ("2.1.0", None, "ImportError: numpy.core.multiarray failed to import", FAIL),
    ("1.26.4", None, "AttributeError: _ARRAY_API not found", FAIL),
    ("1.24.2", None, "ModuleNotFoundError: No module named 'cv2'", FAIL),
])
def test_opencv_numpy_compatibility(numpy_v, cv2_v, error, status):
    got, detail = opencv_verdict(numpy_v, cv2_v, error)
    assert got == status, detail
    assert "numpy<2" not in detail or cv2_v, detail  # an ABI mismatch on a Pi: apt's numpy, whichever major


def test_doctor_takes_trixies_own_opencv_metadata_for_apt_not_for_a_wheel_to_uninstall(monkeypatch):
    """Trixie's python3-opencv has metadata of its own ("opencv", in apt's folder): on a Pi the doctor
    warned "pip uninstall opencv" about apt's OpenCV itself."""
    from importlib import metadata

    from edge.ops.doctor.context import DoctorSettings, _Context
    from edge.ops.doctor.libraries import APT_DIST, check_numpy_opencv

    class Dist:
        def __init__(self, name: str, folder: str):
            self.metadata, self.folder = {"Name": name}, folder

        def locate_file(self, path):
            return Path(self.folder) / path

    def opencv_line(*dists) -> tuple[str, str]:
        monkeypatch.setattr(metadata, "distributions", lambda: list(dists))
        ctx = _Context(DoctorSettings())
        ctx.on_pi = True
        check_numpy_opencv(ctx)
        (line,) = [c for c in ctx.checks if c.name == "opencv"]
        return line.status, line.detail

    apt = Dist("opencv", APT_DIST)
    status, detail = opencv_line(apt)
    assert status == OK and "uninstall" not in detail, detail
    wheel = Dist("opencv-python-headless", "/opt/queue-mood/venv/lib/python3.13/site-packages")
    status, detail = opencv_line(apt, wheel)
    assert status == WARN and detail.endswith("pip uninstall opencv-python-headless"), detail


def test_doctor_names_a_numpy_that_sudo_pip_put_in_usr_local_and_how_to_remove_it(monkeypatch):
    """A numpy in /usr/local (sudo pip install) comes before apt's in every venv with system site
    packages; the doctor called it "pip" and told the user to uninstall it from the venv."""
    import numpy

    from edge.ops.doctor.context import DoctorSettings, _Context
    from edge.ops.doctor.libraries import APT_DIST, check_numpy_opencv, numpy_origin

    usr_local = "/usr/local/lib/python3.11/dist-packages/numpy/__init__.py"
    assert numpy_origin(f"{APT_DIST}/numpy/__init__.py") == ("apt", "")
    assert numpy_origin("/opt/q/venv/lib/python3.11/site-packages/numpy/__init__.py", "/opt/q/venv")[1] == \
        "/opt/q/venv/bin/pip uninstall numpy"
    where, remedy = numpy_origin(usr_local, "/opt/q/venv")
    assert "system-wide" in where and remedy == "sudo python3 -m pip uninstall --break-system-packages numpy"
    status, detail = opencv_verdict("2.1.0", None, "ImportError: numpy.core.multiarray failed to import", remedy)
    assert status == FAIL and remedy in detail and "in the venv" not in detail, detail
    assert remedy in opencv_verdict("2.1.0", "4.6.0", "", remedy)[1]

    monkeypatch.setattr(numpy, "__file__", usr_local)
    ctx = _Context(DoctorSettings())
    ctx.on_pi = True
    check_numpy_opencv(ctx)
    (line,) = [c for c in ctx.checks if c.name == "numpy"]
    assert line.status == WARN and line.detail.endswith(remedy) and "/usr/local/lib/python3.11" in line.detail


def test_pi_health_verdicts():
    assert throttled_verdict(0)[0] == OK
    assert throttled_verdict(0x50000)[0] == WARN  # under-voltage and throttling since boot
    assert throttled_verdict(0x50005)[0] == FAIL  # under-voltage now
    assert throttled_verdict(0x4)[0] == WARN
    assert [temperature_verdict(t)[0] for t in (55.0, 78.0, 86.0)] == [OK, WARN, FAIL]
    assert governor_verdict("performance")[0] == OK and governor_verdict("ondemand")[0] == WARN
    assert clock_verdict(True, "")[0] == OK and clock_verdict(None, "not Linux: the kernel was not asked")[0] == OK


def test_doctor_says_what_failed_when_the_kernel_gives_no_clock_state(monkeypatch):
    """On Linux with adjtimex refused (a sandbox's seccomp filter), the clock row said "(not Linux)"."""
    import ctypes
    import errno

    from edge.ops.doctor.board import check_platform
    from edge.ops.doctor.context import DoctorSettings, _Context
    from edge.service import health

    def refused(_buf):
        ctypes.set_errno(errno.EPERM)
        return -1

    monkeypatch.setattr(health.sys, "platform", "linux")
    monkeypatch.setattr(health, "_adjtimex", lambda: refused)
    ctx = _Context(DoctorSettings())
    check_platform(ctx)
    (row,) = [c for c in ctx.checks if c.name == "clock"]
    assert row.detail == f"not checked: the kernel's adjtimex call failed ({os.strerror(errno.EPERM)})", row.detail
    monkeypatch.setattr(health, "_adjtimex", lambda: None)
    assert clock_verdict(*health.clock_state())[1] == "not checked: this C library has no adjtimex to ask the kernel with"


def test_doctor_warns_when_the_installed_config_points_the_service_outside_its_state_folder(tmp_path):
    from edge.ops.doctor.config import service_paths_verdict

    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    (etc / "config.toml").write_text(f'[sinks]\nspool_dir = "spool"\n[sinks.jsonl]\npath = "{state}/alerts.jsonl"\n'
                                     '[status]\nhistory_db = "history.db"\n')
    cfg = load_config(etc / "config.toml")  # an older install's relative paths: now under etc
    status, line = service_paths_verdict(cfg, str(etc / "config.toml"), str(etc), str(state))
    assert status == WARN and f"sinks.spool_dir {etc}/spool" in line and f"status.history_db {etc}/history.db" in line
    assert "sinks.jsonl.path" not in line and f"e.g. {state}/spool" in line
    (etc / "config.toml").write_text(f'[sinks]\nspool_dir = "{state}/spool"\n[status]\nhistory_db = "~/h.db"\n')
    assert service_paths_verdict(load_config(etc / "config.toml"), str(etc / "config.toml"), str(etc), str(state))[0] == OK
    assert service_paths_verdict(cfg, str(tmp_path / "elsewhere.toml"), str(etc), str(state)) is None  # not the service's
    assert clock_verdict(False, "")[0] == WARN and "timedatectl" in clock_verdict(False, "")[1]
    assert sink_verdict("MQTT broker b:1883 not reachable (timed out)") == WARN
    assert sink_verdict("cannot write /var/lib/queue-mood/alerts.jsonl") == FAIL
    assert sink_verdict("webhook h:443 reachable") == OK


# -- install.sh, the lane scripts and the unit --------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("release, numpy_pin", [("bookworm", "numpy==1.24.2"), ("trixie", "numpy==2.2.4")])
def test_the_wheel_check_resolves_under_the_exact_numpy_install_sh_pins(tmp_path, release, numpy_pin):
    """Bookworm's was checked under numpy<2, which pip resolves with 1.26, not the 1.24.2 install.sh
    pins on the Pi: a dependency needing numpy>=1.25 would pass the check and fail the install."""
    import sys

    got = tmp_path / "constraints.txt"
    fake = tmp_path / "python"  # pip download: keeps what it was given, downloads nothing
    fake.write_text(f'#!/bin/sh\n[ "$1" = - ] && exec "{sys.executable}" "$@"\n'
                    f'while [ $# -gt 0 ]; do case "$1" in\n'
                    f'    -c) cp "$2" "{got}" ;;\n'
                    f'    -d) mkdir -p "$2"; touch "$2/x.whl" ;;\n'
                    f'esac; shift; done\n')
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(DEPLOY / "check_aarch64_wheels.sh"), str(fake)], capture_output=True, text=True,
                          env={**os.environ, "QM_DEBIAN": release}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"OK    {numpy_pin} " in proc.stdout  # step 1: apt's numpy itself, as an aarch64 wheel
    assert [line for line in got.read_text().splitlines() if line.startswith("numpy")] == [numpy_pin]  # step 2


def test_install_sh_refuses_a_numpy_that_sudo_pip_put_in_usr_local_before_changing_anything(tmp_path):
    """It hides apt's numpy in the venv too: the pin would have taken its version."""
    import sys

    python = tmp_path / "python3"
    python.write_text('#!/bin/sh\ncase "$*" in *"import os, numpy"*) '
                      'echo "2.1.0 /usr/local/lib/python3.11/dist-packages/numpy"; exit 0;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {**fake_install_env(tmp_path, venv=False), "PYTHON": str(python)}
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "numpy 2.1.0 in /usr/local/lib/python3.11/dist-packages/numpy",
                            f"sudo {python} -m pip uninstall --break-system-packages numpy", "was not changed")
    assert not (tmp_path / "root").exists()


def test_install_sh_help_and_bad_arguments(tmp_path):
    help_ = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "QM_SKIP_APT" in help_.stdout and "PREFIX" in help_.stdout
    bad = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


@pytest.mark.skipif(not shutil.which("dash"), reason="needs dash, Debian's sh")
def test_install_sh_run_with_sh_says_to_run_it_with_bash(tmp_path):
    """`sudo sh install.sh`, a common habit, stopped with dash's "set: Illegal option -o pipefail"."""
    bundle = fake_bundle(tmp_path)
    proc = subprocess.run(["dash", "install.sh"], cwd=bundle, capture_output=True, text=True,
                          env=fake_install_env(tmp_path))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr == "install.sh: run it with bash, not sh: sudo bash install.sh. Nothing was changed.\n"
    help_ = subprocess.run(["bash", "install.sh", "--help"], cwd=bundle, capture_output=True, text=True)
    assert help_.stdout.startswith("Install or upgrade the queue-mood monitor"), help_.stdout  # not the check


def test_install_sh_refuses_an_incomplete_bundle(tmp_path):
    shutil.copy(DEPLOY / "install.sh", tmp_path / "install.sh")
    env = fake_install_env(tmp_path, venv=False)  # every folder in tmp_path, should the check ever let it through
    proc = subprocess.run(["bash", str(tmp_path / "install.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "not a complete queue-mood bundle" in proc.stderr
    assert not (tmp_path / "root").exists()


def test_unit_file_parses_with_the_keys_bookworm_knows():
    text = UNIT.read_text()
    assert check_unit(text) == []
    service = {k: v for _, k, v in parse_unit(text)["Service"]}
    assert service["ExecStart"] == "/opt/queue-mood/venv/bin/edge run --config /etc/queue-mood/config.toml --wait-for-camera"
    assert (service["Restart"], service["RestartSec"], service["User"]) == ("always", "5", "queue-mood")
    # a failed start's wait before its exit 2 comes before READY=1: systemd's start timeout must not end it first
    assert FAILED_START_WAIT_S + 10 <= float(service.get("TimeoutStartSec", "90"))
    assert set(service["SupplementaryGroups"].split()) == {"video", "gpio"}
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"] == "/var/lib/queue-mood"
    assert service["StateDirectory"] == "queue-mood" and service["StandardOutput"] == "journal"
    assert "PrivateDevices" not in service and "DeviceAllow" not in service  # camera and GPIO need /dev
    unit = {k: v for _, k, v in parse_unit(text)["Unit"]}
    assert unit["StartLimitIntervalSec"] == "0"


def test_unit_check_catches_what_systemd_252_would_ignore():
    good = UNIT.read_text()
    assert any("RestartSteps" in p for p in check_unit(good.replace("RestartSec=5", "RestartSteps=5")))
    assert any("Restart=" in p for p in check_unit(good.replace("Restart=always", "Restart=sometimes")))
    assert any("ExecStart" in p for p in check_unit(good.replace("ExecStart=", "#ExecStart=")))
    assert check_unit("ExecStart=/bin/true\n")  # before any section


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd); the parse check above stands in")
    stub = tmp_path / "opt" / "queue-mood" / "venv" / "bin" / "edge"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "queue-mood.service"
    unit.write_text(UNIT.read_text().replace("/opt/queue-mood/", f"{tmp_path}/opt/queue-mood/"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


# -- install.sh run end to end in a fake environment ----------------------------------------
# A stand-in bundle, and a stand-in venv whose python logs its arguments and succeeds (pip
# included, unless told to fail), so install.sh runs in a second without network, apt or root.

FAKE_VENV_PYTHON = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *"-m pip"*) if [ -e "{fail}" ]; then echo "ERROR: No matching distribution found for ai-edge-litert" >&2; exit 1; fi ;; esac
if [ "$2" = - ]; then
    script=$(cat)
    case "$script" in *load_config*) printf '%s\\n' "$script" | "{real}" -I - "$3"; exit $? ;; esac  # the config as edge reads it
fi
exit 0
"""


def fake_bundle(tmp_path: Path, version: str = "0.1.0", config: str = "[status]\nport = 8765\n") -> Path:
    b = tmp_path / f"bundle-{version}"
    (b / "model").mkdir(parents=True)
    (b / "wheels").mkdir()
    shutil.copy(DEPLOY / "install.sh", b)
    shutil.copy(UNIT, b)
    (b / "config.toml").write_text(config)
    (b / "model" / "model_int8.tflite").write_bytes(f"model {version}".encode())
    (b / "model" / "model.json").write_text("{}")
    (b / "wheels" / f"queue_mood-{version}-py3-none-any.whl").write_bytes(b"wheel")
    return b


def fake_install_env(tmp_path: Path, venv: bool = True) -> dict:
    import sys

    root = tmp_path / "root"
    env = {**os.environ, "PREFIX": str(root / "opt/queue-mood"), "ETC_DIR": str(root / "etc/queue-mood"),
           "STATE_DIR": str(root / "var/lib/queue-mood"), "UNIT_DIR": str(root / "etc/systemd/system"),
           "QM_SKIP_APT": "1", "QM_NO_SERVICE": "1", "QM_SYSTEM_USER": "0", "QM_DOCTOR": "0",
           "PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull}
    if venv:
        bin_ = root / "opt/queue-mood/venv/bin"
        bin_.mkdir(parents=True)
        (bin_.parent / "pyvenv.cfg").write_text("include-system-site-packages = true\n")
        (bin_ / "python").write_text(FAKE_VENV_PYTHON.format(log=tmp_path / "python.log", fail=tmp_path / "pip-fails",
                                                             real=sys.executable))
        (bin_ / "python").chmod(0o755)
    return env


def install(bundle: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(bundle / "install.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def assert_install_sentence(proc, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("install.sh: "), proc.stderr
    for needle in needles:
        assert needle in last, last


def fake_apt(tmp_path: Path, update_rc: int = 0, locked_updates: int = 0) -> Path:
    """apt-get, apt-cache and dpkg-query stand-ins that log their calls; nothing is installed. The
    first locked_updates calls of `apt-get update` fail as while apt-daily holds the package lists."""
    bin_ = tmp_path / "fakebin"
    bin_.mkdir()
    log = tmp_path / "apt.log"
    (bin_ / "apt-get").write_text(
        f'#!/bin/sh\necho "apt-get $*" >> "{log}"\n'
        f'case "$*" in *update*) if [ "$(grep -c update "{log}")" -le {locked_updates} ]; then\n'
        '    echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2\n'
        '    echo "E: Unable to lock directory /var/lib/apt/lists/" >&2; exit 100; fi\n'
        f'  [ {update_rc} = 0 ] || echo "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease" >&2\n'
        f'  exit {update_rc};; esac\n'
        'exit 0\n')
    (bin_ / "apt-cache").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")  # nothing installed yet
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


def test_install_sh_refuses_an_old_python_before_apt_or_anything_else(tmp_path):
    import sys

    old = tmp_path / "python3.9"  # Bullseye's: no tomllib, version 3.9 to every check
    old.write_text(f'#!/bin/sh\n[ "$1" = -I ] && shift\n[ "$1" = - ] && {{ echo "ModuleNotFoundError: No module named \'tomllib\'" >&2; exit 1; }}\n'
                   f'[ "$1" = -c ] && exec {sys.executable} -I -c "import sys; sys.version_info = (3, 9, 2, \'final\', 0)\n$2"\n'
                   f'exec {sys.executable} -I "$@"\n')
    old.chmod(0o755)
    env = {**fake_install_env(tmp_path, venv=False), "PYTHON": str(old)}
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "is Python 3.9", "needs Python 3.11", "Nothing was changed")
    assert not (tmp_path / "root").exists()
    if os.geteuid() == 0:  # apt runs only as root: it must not have been called either
        env.update(QM_SKIP_APT="0", PATH=f"{fake_apt(tmp_path)}:{env['PATH']}")
        proc = install(tmp_path / "bundle-0.1.0", env)
        assert_install_sentence(proc, "is Python 3.9")
        assert not (tmp_path / "apt.log").exists() and not (tmp_path / "root").exists()


def test_install_sh_pins_pip_to_the_numpy_apt_installed_whichever_major_it_is(tmp_path):
    """numpy<2 kept Bookworm's 1.24 only by luck of pip's choice (1.26 satisfies it too) and on
    Trixie, whose apt numpy is 2.x and whose OpenCV is built against it, it asked pip for a numpy
    1.x that has no wheel for its Python 3.13: the install failed, said as no access to PyPI."""
    import numpy

    proc = install(fake_bundle(tmp_path), fake_install_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    constraints = (tmp_path / "root/opt/queue-mood/pip-constraints.txt").read_text()
    pins = [line for line in constraints.splitlines() if line.startswith("numpy")]
    assert pins == [f"numpy=={numpy.__version__}"]  # PYTHON's numpy here, apt's on a Pi
    # its how-to names this install's paths (PREFIX here is under tmp_path), not the default's
    venv = tmp_path / "root/opt/queue-mood/venv"
    assert f"#   {venv}/bin/pip install -c {tmp_path}/root/opt/queue-mood/pip-constraints.txt PACKAGE" in constraints
    log = (tmp_path / "python.log").read_text()
    assert "-c " in log and "pip-constraints.txt" in log  # every pip install is held to it
    assert "uninstall" not in log  # a venv without a numpy of its own: nothing to take out


def test_install_sh_takes_a_numpy_wheel_out_of_a_kept_venv_before_pip_runs(tmp_path):
    """An upgrade of a venv holding pip's numpy (an older install's numpy<2 let 1.26 in, as did
    `pip install --force-reinstall ai-edge-litert 'numpy<2'`): pinned to apt's version, pip swapped
    it for a wheel of that version, and the check after it stopped the upgrade half done."""
    env = fake_install_env(tmp_path)
    venv_python = tmp_path / "root/opt/queue-mood/venv/bin/python"
    own = tmp_path / "root/opt/queue-mood/venv/lib/python3.11/site-packages/numpy/__init__.py"
    lines = venv_python.read_text().splitlines()  # asked where numpy is, it answers: inside the venv
    venv_python.write_text("\n".join([lines[0], lines[1], f'case "$*" in *find_spec*) echo "{own}"; exit 0 ;; esac',
                                      *lines[2:]]) + "\n")
    proc = install(fake_bundle(tmp_path), env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"removing the venv's own numpy ({own.parent}), so apt's" in proc.stdout
    pip = [line for line in (tmp_path / "python.log").read_text().splitlines() if "-m pip" in line]
    assert "uninstall -y" in pip[0] and pip[0].endswith(" numpy"), pip  # first, before any install
    assert any("[edge,mqtt,gpio]" in line for line in pip[1:]), pip


@pytest.mark.slow
def test_install_sh_makes_the_venv_anew_after_the_os_moved_it_to_a_newer_python(tmp_path):
    """An in-place Bookworm -> Trixie upgrade: the venv's python (a link to /usr/bin/python3) runs
    3.13 while its packages, pip included, stay under lib/python3.11; reused, pip was missing and
    the install ended with "the Pi needs access to PyPI". (Seen in a Debian 13 root.) A first
    install, with no venv to compare, and a second, whose venv agrees, go on as before."""
    import sys

    env = fake_install_env(tmp_path, venv=False)
    venv = tmp_path / "root/opt/queue-mood/venv"
    made, stand_in = tmp_path / "made.log", tmp_path / "venv-python"
    fake = FAKE_VENV_PYTHON.format(log=tmp_path / "python.log", fail=tmp_path / "pip-fails", real=sys.executable)
    lines = fake.splitlines()  # asked its version, the venv's python answers the system's: 3.13
    stand_in.write_text("\n".join([lines[0], 'case "$*" in *version_info*) echo 3.13; exit 0 ;; esac', *lines[1:]]) + "\n")
    stand_in.chmod(0o755)
    python = tmp_path / "python3"  # the system's: makes a venv of the stand-in kind, else is Python
    python.write_text(f'#!/bin/sh\nif [ "$1 $2" = "-m venv" ]; then echo "$*" >> "{made}"; '
                      f'mkdir -p "{venv}/bin"; cp "{stand_in}" "{venv}/bin/python"; '
                      f'printf "include-system-site-packages = true\\nversion = 3.13.5\\n" > "{venv}/pyvenv.cfg"; exit 0; fi\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env["PYTHON"] = str(python)

    def installed(name: str) -> str:
        proc = install(fake_bundle(tmp_path / name), env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "making it anew" not in installed("first") and len(made.read_text().splitlines()) == 1
    assert "reusing the existing venv" in installed("same")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.11.2\n")
    said = installed("after the os upgrade")
    assert "made with Python 3.11 and runs Python 3.13 now (the OS was upgraded): making it anew" in said
    assert made.read_text().splitlines()[-1].split() == ["-m", "venv", "--system-site-packages", str(venv)]
    assert len(made.read_text().splitlines()) == 2 and "version = 3.13.5" in (venv / "pyvenv.cfg").read_text()


def test_install_sh_apt_that_fails_is_one_sentence_and_waits_for_the_lock(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("install.sh runs apt only as root")
    env = fake_install_env(tmp_path, venv=False)
    env.update(QM_SKIP_APT="0", PATH=f"{fake_apt(tmp_path, update_rc=100)}:{env['PATH']}")
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "apt-get update failed", "internet", "Nothing was installed")
    (update,) = (tmp_path / "apt.log").read_text().splitlines()  # no network: not tried again
    assert "DPkg::Lock::Timeout=300" in update and "--error-on=any" in update
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("wait_s, locked, installs", [("30", 1, True), ("1", 1000, False)])
@pytest.mark.slow
def test_install_sh_waits_while_another_apt_holds_the_package_lists(tmp_path, wait_s, locked, installs):
    """apt-get update fails at once on the lists lock whatever DPkg::Lock::Timeout says (apt 2.6):
    apt-daily at a first boot must be waited for, up to QM_APT_LOCK_WAIT, not called no network."""
    if os.geteuid() != 0:
        pytest.skip("install.sh runs apt only as root")
    env = fake_install_env(tmp_path)
    env.update(QM_SKIP_APT="0", QM_APT_LOCK_WAIT=wait_s,
               PATH=f"{fake_apt(tmp_path, locked_updates=locked)}:{env['PATH']}")
    proc = install(fake_bundle(tmp_path), env)
    updates = [c for c in (tmp_path / "apt.log").read_text().splitlines() if " update " in c]
    if installs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(updates) == 2 and "waiting for it" in proc.stdout
    else:
        assert_install_sentence(proc, "apt-get update failed", f"busy elsewhere for more than {wait_s}s")
        # Tries at least once; whether a second try fits in 1 s depends on bash's whole-second
        # SECONDS and the machine's load (the 30-s case above checks the retry itself).
        assert updates and not Path(env["ETC_DIR"]).exists()


def test_install_sh_full_disk_is_one_sentence_before_anything_changes(tmp_path):
    env = {**fake_install_env(tmp_path), "QM_MIN_FREE_MB": str(10 ** 12)}
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "MB free at", "free some space", "Nothing was changed")
    assert not (tmp_path / "python.log").exists() and not Path(env["ETC_DIR"]).exists()


def test_install_sh_pip_without_pypi_is_one_sentence_and_an_upgrade_keeps_the_installed_files(tmp_path):
    env = fake_install_env(tmp_path)
    (tmp_path / "pip-fails").touch()
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "pip could not install", "PyPI", "not restarted")
    assert (Path(env["PREFIX"]) / "venv/bin/python").exists()  # the installed venv is kept
    assert not Path(env["ETC_DIR"]).exists() and not (Path(env["PREFIX"]) / "model").exists()


@pytest.mark.slow  # 5 s of pip: left to the full run (CI)
def test_install_sh_pip_without_pypi_on_a_fresh_pi_leaves_nothing_behind(tmp_path):
    env = {**fake_install_env(tmp_path, venv=False), "QM_PIP_ARGS": "--no-index"}  # a real venv, no index
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "pip could not install", "PyPI", "The new venv was removed")
    assert not Path(env["PREFIX"]).exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP"])
def test_install_sh_lets_pip_finish_an_upgrade_when_interrupted_and_then_stops(tmp_path, sig):
    """Ctrl-C (or SIGTERM, or a hang-up) to the install's process group while pip swaps queue-mood
    used to kill pip between removing the old program and installing the new one: no venv/bin/edge."""
    env = fake_install_env(tmp_path)  # a kept venv: an upgrade
    python = Path(env["PREFIX"]) / "venv/bin/python"
    python.rename(python.with_name("python.real"))
    python.write_text(f'#!/bin/sh\ncase "$*" in *--force-reinstall*) kill -{sig} 0; sleep 0.2; '
                      f'echo finished > "{tmp_path}/pip-done";; esac\nexec "$0.real" "$@"\n')
    python.chmod(0o755)
    # the signal goes to this group only; each as a terminal leaves it (bash cannot trap a signal
    # ignored when it starts: SIGHUP under nohup, SIGINT in a job a script put in the background)
    proc = subprocess.run(["bash", str(fake_bundle(tmp_path) / "install.sh")], capture_output=True, text=True,
                          env=env, timeout=120, start_new_session=True,
                          preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL)
                                              for s in (signal.SIGHUP, signal.SIGINT)])
    assert (tmp_path / "pip-done").exists(), proc.stdout + proc.stderr
    assert_install_sentence(proc, f"stopped by SIG{sig} after pip had installed", "run install.sh again")
    assert not (Path(env["ETC_DIR"]) / "config.toml").exists()  # stopped before the files step


@pytest.mark.parametrize("status, says", [  # the other cases with the slow tests: each is an install
    pytest.param('host = "fd00::5"\npassword = "pw-0123456789"\n',
                 "http://[fd00::5]:8765/ (user and password: [status] user and password in", marks=pytest.mark.slow),
    pytest.param('host = "0.0.0.0"\nmetrics_token = "fleet-token-0123456789"\n', ":8765/metrics for head office's "
                 "scrape only; the page needs [status] token or password in", marks=pytest.mark.slow),
    pytest.param('enabled = false\n', "status   off ([status] enabled = false in", marks=pytest.mark.slow),
    pytest.param('port = 0\n', "a free port chosen at each start", marks=pytest.mark.slow),
    ('', "http://127.0.0.1:8765/ on the Pi only (curl http://127.0.0.1:8765/status)"),
    ('token = "s3cret-token-0123456789"\n',  # a plain curl would answer 401
     "(curl -H 'Authorization: Bearer TOKEN' http://127.0.0.1:8765/status, with [status] token from")])
def test_install_sh_says_where_the_status_page_is_as_edge_reads_the_config(tmp_path, status, says):
    proc = install(fake_bundle(tmp_path, "0.1.0", "[status]\n" + status), fake_install_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert says in proc.stdout and not [s for s in ("pw-0123456789", "s3cret-token", "fleet-token") if s in proc.stdout]


def test_install_sh_under_a_hardened_umask_leaves_the_program_readable_by_the_service(tmp_path):
    """sudo keeps a caller's umask stricter than 022: under 027 the venv, pip's files and PREFIX were
    0750/0640 root:root, which the unit's User=queue-mood may not enter, so the service never started."""
    env = fake_install_env(tmp_path)
    venv_python = Path(env["PREFIX"]) / "venv/bin/python"
    venv_python.rename(venv_python.with_name("python.fake"))
    venv_python.write_text(f'#!/bin/sh\numask >> "{tmp_path}/umask.log"\nexec "$0.fake" "$@"\n')
    venv_python.chmod(0o755)
    bundle = fake_bundle(tmp_path)
    proc = subprocess.run(["bash", str(bundle / "install.sh")], capture_output=True, text=True, env=env,
                          timeout=120, umask=0o027)
    assert proc.returncode == 0, proc.stderr
    umasks = set((tmp_path / "umask.log").read_text().split())
    assert umasks == {"0022"}, umasks  # pip (and a new venv) write what the service reads
    assert stat.S_IMODE((Path(env["PREFIX"]) / "pip-constraints.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((Path(env["ETC_DIR"]) / "config.toml").stat().st_mode) == 0o640  # modes of its own stay


@pytest.mark.skipif(not shutil.which("flock"), reason="needs util-linux's flock")
def test_install_sh_while_another_install_runs_is_one_sentence_and_changes_nothing(tmp_path):
    """A second install.sh (the first-boot unit's, another SSH session's while apt waits) ran pip into
    the same venv and swapped the kept bundles under the first."""
    import fcntl

    env = fake_install_env(tmp_path)
    bundle = fake_bundle(tmp_path)
    fd = os.open(Path(env["PREFIX"]).parent, os.O_RDONLY)  # as the running install holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = install(bundle, env)
    finally:
        os.close(fd)
    assert_install_sentence(proc, "another install.sh is installing into", "let it finish", "Nothing was changed")
    assert not (tmp_path / "python.log").exists() and not Path(env["ETC_DIR"]).exists()
    assert install(bundle, env).returncode == 0  # once it is done


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("flock"), reason="needs util-linux's flock")
def test_install_sh_run_right_after_another_finished_is_not_refused_as_running(tmp_path):
    """The status-page line was read from a process substitution, which bash does not wait for: its
    python, slow to exit on a busy machine, held the install lock after install.sh had exited."""
    env = fake_install_env(tmp_path)
    venv_python = Path(env["PREFIX"]) / "venv/bin/python"
    venv_python.rename(venv_python.with_name("python.fake"))
    venv_python.write_text('#!/bin/sh\nif [ "$2" = - ]; then script=$(cat)\n'
                           '  case "$script" in *"load_config(sys.argv[1]).status"*)  # answers, then is slow to exit\n'
                           '    printf "%s\\n" "$script" | "$0.fake" "$@"; sleep 2; exit 0;; esac\n'
                           '  printf "%s\\n" "$script" | exec "$0.fake" "$@"; fi\nexec "$0.fake" "$@"\n')
    venv_python.chmod(0o755)
    bundle = fake_bundle(tmp_path)
    first = install(bundle, env)
    assert first.returncode == 0 and "on the Pi only" in first.stdout, first.stderr
    second = install(bundle, env)
    assert second.returncode == 0, second.stderr


def test_install_sh_syncs_what_it_wrote_to_the_card_once_it_is_all_in_place(tmp_path):
    """A Pi unplugged within ext4's 30 s of an install (carried from the desk to the till) booted to
    an empty config or model: the service restarting into that error every 5 s."""
    env = fake_install_env(tmp_path)
    etc, prefix = Path(env["ETC_DIR"]), Path(env["PREFIX"])
    bin_, log = tmp_path / "syncbin", tmp_path / "sync.log"
    bin_.mkdir()
    (bin_ / "sync").write_text(  # `sync -- FILE...`: the staged files, before they are renamed into place
        f'#!/bin/sh\nif [ $# -gt 0 ]; then shift; for f; do [ -s "$f" ] || echo "empty $f" >> "{log}"; done\n'
        f'  echo "synced $# staged" >> "{log}"; exit 0; fi\n'
        f'for f in "{etc}/config.toml" "{prefix}/model/model_int8.tflite" '
        f'"{prefix}/bundle/install.sh" "{env["UNIT_DIR"]}/queue-mood.service"; do\n'
        f'  [ -s "$f" ] || echo "missing $f" >> "{log}"; done\necho synced >> "{log}"\n')
    (bin_ / "sync").chmod(0o755)
    proc = install(fake_bundle(tmp_path), {**env, "PATH": f"{bin_}:{env['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == "synced 4 staged\nsynced\n"  # model, card, config, unit


@pytest.mark.slow
def test_install_sh_upgrade_keeps_settings_and_data_and_rollback_goes_back(tmp_path):
    env = fake_install_env(tmp_path)
    prefix, etc, state = Path(env["PREFIX"]), Path(env["ETC_DIR"]), Path(env["STATE_DIR"])
    v1 = fake_bundle(tmp_path, "0.1.0", '[status]\nhost = "0.0.0.0"\nport = 8765\ntoken = "s3cret-token-0123456789"\n')
    first = install(v1, env)
    assert first.returncode == 0, first.stderr
    assert "status   http://" in first.stdout and ":8765/?token=TOKEN" in first.stdout
    assert "s3cret-token" not in first.stdout + first.stderr  # the token is never printed
    assert "rollback" not in first.stdout  # nothing before it
    # the store edits its config; the service wrote a spool event and its history
    (etc / "config.toml").write_text((etc / "config.toml").read_text() + "# edited at the store\n")
    (state / "spool/mqtt").mkdir(parents=True)
    (state / "spool/mqtt/1.json").write_text("{}")
    (state / "history.sqlite").write_bytes(b"history")

    second = install(fake_bundle(tmp_path, "0.2.0"), env)
    assert second.returncode == 0, second.stderr
    assert "# edited at the store" in (etc / "config.toml").read_text()  # token and edits kept
    assert (state / "spool/mqtt/1.json").exists() and (state / "history.sqlite").read_bytes() == b"history"
    assert (prefix / "model/model_int8.tflite").read_bytes() == b"model 0.2.0"
    assert (prefix / "bundle/wheels/queue_mood-0.2.0-py3-none-any.whl").exists()
    assert (prefix / "bundle.previous/wheels/queue_mood-0.1.0-py3-none-any.whl").exists()
    assert stat.S_IMODE((prefix / "bundle").stat().st_mode) == 0o700  # its config may hold credentials
    assert f" {prefix}/bundle.previous/install.sh (back to the version installed before" in second.stdout

    back = install(prefix / "bundle.previous", env)  # the rollback the summary names
    assert back.returncode == 0, back.stderr
    assert (prefix / "model/model_int8.tflite").read_bytes() == b"model 0.1.0"
    last_pip = [line for line in (tmp_path / "python.log").read_text().splitlines() if "-m pip" in line][-1]
    assert "--force-reinstall" in last_pip and last_pip.endswith("bundle.previous/wheels/queue_mood-0.1.0-py3-none-any.whl")
    assert (prefix / "bundle/wheels/queue_mood-0.1.0-py3-none-any.whl").exists()
    assert (prefix / "bundle.previous/wheels/queue_mood-0.2.0-py3-none-any.whl").exists()  # and forward again
    assert "# edited at the store" in (etc / "config.toml").read_text()
    assert (state / "spool/mqtt/1.json").exists()


@pytest.mark.slow
def test_install_sh_rollback_line_names_the_paths_the_install_was_given(tmp_path):
    """sudo starts the installer with a clean environment: a store that installed with PREFIX= (and
    ETC_DIR, ...) and ran the printed rollback as it stood had the old version installed afresh into
    /opt/queue-mood, its own install left on the new one."""
    import shlex

    env = fake_install_env(tmp_path / "store 1")  # a space in the paths: each one word of the command
    prefix = Path(env["PREFIX"])
    assert install(fake_bundle(tmp_path, "0.1.0"), env).returncode == 0
    second = install(fake_bundle(tmp_path, "0.2.0"), env)
    assert second.returncode == 0, second.stderr
    (line,) = [ln for ln in second.stdout.splitlines() if ln.startswith("rollback ")]
    command = line.removeprefix("rollback sudo ").split(" (")[0]
    words = shlex.split(command)
    assert words[-1] == f"{prefix}/bundle.previous/install.sh"
    # else it would go to /opt/queue-mood, /etc/queue-mood, ... and run with /usr/bin/python3
    assert words[:-1] == [f"{v}={env[v]}" for v in ("PREFIX", "ETC_DIR", "STATE_DIR", "UNIT_DIR", "PYTHON")]
    # as sudo runs it: none of the install's paths in the environment, only what an unprivileged run needs
    clean = {"PATH": os.environ["PATH"], "QM_SKIP_APT": "1", "QM_NO_SERVICE": "1", "QM_SYSTEM_USER": "0",
             "QM_DOCTOR": "0"}
    back = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=clean, timeout=120)
    assert back.returncode == 0, back.stderr
    assert (prefix / "model/model_int8.tflite").read_bytes() == b"model 0.1.0"
    assert (prefix / "bundle/wheels/queue_mood-0.1.0-py3-none-any.whl").exists()


@pytest.mark.slow
def test_install_sh_says_which_bundle_it_installed_and_which_it_replaced(tmp_path):
    """Every bundle's wheel is queue-mood 0.1.0, so an upgrade's pip says the package "is already
    installed with the same version": the summary tells the bundles apart by when each was made."""
    env = fake_install_env(tmp_path)
    old, new = fake_bundle(tmp_path, "0.1.0"), fake_bundle(tmp_path, "0.2.0")
    (old / "MANIFEST.json").write_text(json.dumps({"created": "2026-12-01T07:06:42+00:00", "files": {}}))  # no commit
    (new / "MANIFEST.json").write_text(json.dumps({"created": "2026-12-02T17:41:47+00:00", "commit": "0123456789ab",
                                                   "files": {}}))
    first = install(old, env)
    assert first.returncode == 0, first.stderr
    assert "bundle   made 2026-12-01T07:06:42+00:00\n" in first.stdout  # nothing before it
    second = install(new, env)
    assert second.returncode == 0, second.stderr
    assert "bundle   made 2026-12-02T17:41:47+00:00 from commit 0123456789ab (the version before it: made " \
           "2026-12-01T07:06:42+00:00)" in second.stdout
    back = install(Path(env["PREFIX"]) / "bundle.previous", env)  # the rollback runs from the folder it refills
    assert "bundle   made 2026-12-01T07:06:42+00:00 (the version before it: made 2026-12-02T17:41:47+00:00 from " \
           "commit 0123456789ab)" in back.stdout
    (old / "MANIFEST.json").unlink()  # a bundle from before MANIFEST.json
    third = install(old, env)
    assert "bundle   made at a time it does not record (the version before it: made 2026-12-01T07:06:42+00:00)" \
        in third.stdout


def test_a_model_missing_or_damaged_in_an_install_under_another_prefix_says_to_reinstall_the_bundle(tmp_path,
                                                                                                   monkeypatch):
    """A store that installed with PREFIX= has its model there, not in /opt/queue-mood: its reader
    still has no training setup, and install.sh takes PREFIX from the environment."""
    from edge.errors import UserError
    from edge.pipeline.classifier import Classifier

    env = fake_install_env(tmp_path)
    prefix, etc = Path(env["PREFIX"]), Path(env["ETC_DIR"])
    bundle = fake_bundle(tmp_path, config='[model]\npath = "/opt/queue-mood/model/model_int8.tflite"\n')
    (bundle / "MANIFEST.json").write_text('{"files": {}}')
    assert install(bundle, env).returncode == 0
    reinstall = f"reinstall the bundle, which puts its model and card back: sudo PREFIX={prefix} {prefix}/bundle/install.sh"
    model = prefix / "model/model_int8.tflite"
    assert load_config(etc / "config.toml").model.path == str(model)
    with pytest.raises(UserError, match="Model card .* key") as err:  # the stand-in bundle's card is empty: damaged
        Classifier(model)
    assert reinstall in str(err.value) and "edge convert" not in str(err.value)
    monkeypatch.chdir(prefix)  # the model named from the install's folder: the PREFIX said in full
    with pytest.raises(UserError, match="Model card") as err:
        Classifier(Path("model/model_int8.tflite"))
    assert reinstall in str(err.value)
    mine = prefix / "mine"  # a model of the store's own in another folder there: the bundle never had it
    shutil.copytree(model.parent, mine)
    with pytest.raises(UserError, match="Model card") as err:
        Classifier(mine / "model_int8.tflite")
    assert "reinstall the bundle" not in str(err.value) and "edge convert" in str(err.value)
    model.unlink()  # deleted, or never copied
    proc = run_cli("run", "--config", etc / "config.toml")
    assert_one_sentence(proc, f"Model file {model} does not exist; {reinstall}")
    assert "edge convert" not in proc.stderr


@pytest.mark.slow
def test_install_sh_run_again_with_the_same_bundle_keeps_the_rollback_to_the_version_before(tmp_path):
    env = fake_install_env(tmp_path)
    prefix = Path(env["PREFIX"])
    assert install(fake_bundle(tmp_path, "0.1.0"), env).returncode == 0
    assert install(fake_bundle(tmp_path, "0.2.0"), env).returncode == 0
    again = tmp_path / "unpacked-again"  # the same bundle, unpacked afresh and installed a second time
    shutil.copytree(tmp_path / "bundle-0.2.0", again / "bundle-0.2.0")
    proc = install(again / "bundle-0.2.0", env)
    assert proc.returncode == 0, proc.stderr
    assert (prefix / "bundle/wheels/queue_mood-0.2.0-py3-none-any.whl").exists()
    assert (prefix / "bundle.previous/wheels/queue_mood-0.1.0-py3-none-any.whl").exists()  # still the way back


# -- upgrading a Pi installed from an older bundle ---------------------------------------------
# install.sh keeps /etc/queue-mood/config.toml, and every `edge bundle` writes each setting with
# its value: this is the config a bundle of e4c5e47 (before tracking.smooth_s and
# schedule.detect_hz) installed, trimmed to the tables with keys that are gone since.
OLD_BUNDLE_CONFIG = """# queue-mood settings, written by `edge bundle` (2026-11-28 12:58 UTC, from store.toml).
# Every setting is listed with its value. After editing: sudo systemctl restart queue-mood
device_name = "till3"

[tracking]
iou_match = 0.3
max_gap_s = 1.5
ema_alpha = 0.3
min_hits = 3

[schedule]
classify_hz = 2.0
classify_max_per_frame = 2
detect_every = 3

[mood]
window_s = 10.0
negative = ["angry", "disgust", "fear", "sad"]
min_confidence = 0.4
"""


def test_an_older_bundles_config_with_keys_at_their_old_defaults_still_loads_after_an_upgrade(tmp_path, caplog):
    cfg = tmp_path / "config.toml"
    cfg.write_text(OLD_BUNDLE_CONFIG)
    with caplog.at_level("WARNING", logger="edge.config"):
        c = load_config(cfg)  # the upgraded service starts
    assert c.tracking.max_gap_s == 1.5 and c.tracking.min_hits == 3 and c.mood.window_s == 10.0  # the store's kept
    assert c.tracking.smooth_s == 0.56 and c.schedule.detect_hz == 5.0  # what the old defaults did
    said = caplog.text
    assert "'tracking.ema_alpha' is no longer read" in said and "tracking.smooth_s" in said
    assert "'schedule.detect_every' is no longer read" in said and "schedule.detect_hz" in said
    assert "remove the line" in said


def test_an_old_key_at_a_value_the_store_chose_is_refused_naming_its_replacement(tmp_path):
    from edge.config import ConfigError

    cfg = tmp_path / "config.toml"
    cfg.write_text(OLD_BUNDLE_CONFIG.replace("detect_every = 3", "detect_every = 2"))
    with pytest.raises(ConfigError, match=r"'schedule\.detect_every' is no longer read; use schedule\.detect_hz"):
        load_config(cfg)


@pytest.mark.slow
def test_install_sh_says_when_the_kept_config_does_not_load_with_the_new_version(tmp_path):
    """Restarting into a config the new version refuses is a crash loop: install.sh says which
    line, and (under systemd) leaves the running service alone."""
    env = fake_install_env(tmp_path)
    assert install(fake_bundle(tmp_path, "0.1.0"), env).returncode == 0
    kept = Path(env["ETC_DIR"]) / "config.toml"
    kept.write_text(OLD_BUNDLE_CONFIG.replace("detect_every = 3", "detect_every = 2"))  # the store's, kept
    upgrade = install(fake_bundle(tmp_path, "0.2.0"), env)
    assert upgrade.returncode == 0, upgrade.stderr  # the install itself is done
    (line,) = [ln for ln in upgrade.stderr.splitlines() if "does not load" in ln]
    assert line == (f"install.sh: {kept} does not load with this version: Config key 'schedule.detect_every' is no "
                    "longer read; use schedule.detect_hz, detector runs per second (5 is what detect_every = 3 gave at "
                    f"15 fps). Fix it (this bundle's own settings are beside it in {kept}.bundle), then: sudo systemctl "
                    "restart queue-mood.service")
    kept.write_text(kept.read_text().replace("detect_every = 2", "detect_every = 3"))  # an old default: loads
    again = install(fake_bundle(tmp_path, "0.3.0"), env)
    assert again.returncode == 0 and "does not load" not in again.stderr, again.stderr


def bundle_with_wheel(tmp_path: Path, version: str) -> Path:
    """A stand-in bundle whose wheel imports (a pure-Python zip, as on the Pi)."""
    bundle = fake_bundle(tmp_path, version)
    (wheel,) = (bundle / "wheels").iterdir()
    with zipfile.ZipFile(wheel, "w") as z:  # the package as a wheel holds it
        for f in (REPO / "edge").rglob("*.py"):
            z.write(f, f.relative_to(REPO).as_posix())
    return bundle


@pytest.mark.slow
def test_install_sh_refuses_an_upgrade_whose_wheel_refuses_the_kept_config_before_changing_anything(tmp_path):
    """With a wheel that imports (a pure-Python zip, as on the Pi), the kept config is read by the new
    version before the install: refused, the old program and model stay, so no reboot finds the
    service crash-looping on a config fixed only in a message."""
    env = fake_install_env(tmp_path)
    assert install(fake_bundle(tmp_path, "0.1.0"), env).returncode == 0
    kept = Path(env["ETC_DIR"]) / "config.toml"
    kept.write_text(OLD_BUNDLE_CONFIG.replace("detect_every = 3", "detect_every = 2"))
    bundle = bundle_with_wheel(tmp_path, "0.2.0")
    installed = Path(env["PREFIX"]) / "model" / "model_int8.tflite"
    proc = install(bundle, env)
    assert_install_sentence(proc, f"{kept} does not load with this version: Config key 'schedule.detect_every' is no "
                            "longer read", f"this bundle's own settings are in {bundle}/config.toml",
                            "Nothing was changed.")
    assert installed.read_bytes() == b"model 0.1.0" and not (tmp_path / "python.log").read_text().count("0.2.0")
    assert "== venv" not in proc.stdout  # stopped before the venv and pip
    kept.write_text(kept.read_text().replace("detect_every = 2", "detect_every = 3"))
    assert install(bundle, env).returncode == 0 and installed.read_bytes() == b"model 0.2.0"


@pytest.mark.slow
def test_install_sh_refuses_an_upgrade_whose_kept_config_names_a_camera_beside_a_path(tmp_path):
    """Releases before 93b8495 (42e8faf among them) watched source.path where the bundle's
    `camera = 0` stood beside it; this one watches the camera and ignores the path. Upgraded as
    it is, a Pi that watched a network camera would turn to a camera it may not have (CAMERA
    DOWN from then on)."""
    env = fake_install_env(tmp_path)
    assert install(fake_bundle(tmp_path, "0.1.0"), env).returncode == 0
    kept = Path(env["ETC_DIR"]) / "config.toml"
    kept.write_text('[source]\ncamera = 0\npath = "rtsp://till:secret@cam3.local/stream"\n')  # as the store filled it
    bundle = bundle_with_wheel(tmp_path, "0.2.0")
    installed = Path(env["PREFIX"]) / "model" / "model_int8.tflite"
    proc = install(bundle, env)
    assert_install_sentence(proc, f"{kept} does not load with this version: [source] camera = 0 and path = ",
                            "releases before this one watched the path", "delete the camera line",
                            "Nothing was changed.")
    assert "secret" not in proc.stderr and installed.read_bytes() == b"model 0.1.0"
    kept.write_text('[source]\npath = "rtsp://till:secret@cam3.local/stream"\n')
    assert install(bundle, env).returncode == 0 and installed.read_bytes() == b"model 0.2.0"


@pytest.mark.slow
def test_a_bundle_of_a_float_model_says_what_edge_run_would_warn(tmp_path, shipped_model):
    """A float model of one's own (its card made for it) runs several times slower on a Pi than
    int8: the bundle that ships it must say so, as `edge run` and `edge doctor` do."""
    from tests.test_model_pairing import tiny_model

    model, _ = tiny_model(tmp_path / "float", shipped_model)
    wheel = tmp_path / "queue_mood-0.0.0-py3-none-any.whl"  # check_wheel's due: a zip with its METADATA
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("queue_mood-0.0.0.dist-info/METADATA", "Name: queue-mood\n")
    proc = run_cli("bundle", "--model", model, "--wheel", wheel, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert f"note: Model {model}: it is a float model, not int8" in proc.stdout, proc.stdout
