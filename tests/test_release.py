"""Which release a monitor runs, for head office: the source commit `edge bundle` records in
MANIFEST.json, read back by the monitor installed from it (or from its git checkout), and shown
in /status, /metrics, `edge --version` and `edge doctor`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.release import checkout_commit, commit_time, source_commit
from tests.live_edge import EdgeRun, METRICS_TOKEN

REPO = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(not shutil.which("git"), reason="needs git")


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout of a source with pyproject.toml, one commit on branch main."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text("[project]\nname = 'queue-mood'\n")
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "pyproject.toml")
    git(src, "commit", "-q", "-m", "one")
    return src


@needs_git
def test_the_bundle_commit_is_short_and_dirty_only_for_changes_to_tracked_files(checkout):
    head = git(checkout, "rev-parse", "HEAD")
    assert source_commit(checkout) == head[:12]
    (checkout / "notes.txt").write_text("untracked: not in the wheel")
    assert source_commit(checkout) == head[:12]
    (checkout / "pyproject.toml").write_text("[project]\nname = 'queue-mood'\nversion = '0.2'\n")
    assert source_commit(checkout) == head[:12] + "-dirty"


@pytest.mark.slow
@needs_git
def test_a_bundle_whose_wheel_holds_a_module_not_yet_in_git_is_dirty(tmp_path, shipped_model):
    """A module written but not yet `git add`ed goes into the wheel, yet the bundle recorded the bare
    commit: two bundles of different code said the same release, in /status and `edge --version`."""
    from edge.ops.bundle import BundleSettings
    from edge.ops.bundle import run as bundle_run

    src = tmp_path / "src"
    shutil.copytree(REPO / "deploy", src / "deploy")
    (src / "pyproject.toml").write_text('[project]\nname = "queue-mood"\nversion = "0.1.0"\n'
                                        '[tool.setuptools.packages.find]\ninclude = ["pkgx*"]\n')
    (src / "pkgx").mkdir()
    (src / "pkgx" / "__init__.py").write_text("")
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "one")
    (src / "notes.txt").write_text("untracked, and not in the wheel")
    head = git(src, "rev-parse", "HEAD")[:12]

    def commit_of(out: str):
        bundle_run(BundleSettings(out=str(tmp_path / out), model=str(shipped_model), source=str(src)))
        return json.loads((tmp_path / out / "MANIFEST.json").read_text())["commit"]

    assert commit_of("clean") == head
    (src / "pkgx" / "new_sink.py").write_text("")
    assert commit_of("untracked-module") == head + "-dirty"


@needs_git
def test_a_source_that_is_not_a_git_checkout_or_without_git_has_no_commit(checkout, tmp_path, monkeypatch):
    plain = tmp_path / "plain"  # an unpacked source archive
    plain.mkdir()
    (plain / "pyproject.toml").write_text("")
    assert source_commit(plain) is None
    inner = checkout / "vendored"  # a copy lying inside some other repository: not that repository's commit
    inner.mkdir()
    (inner / "pyproject.toml").write_text("")
    assert source_commit(inner) is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert source_commit(checkout) is None


@needs_git
def test_the_commit_time_dates_a_bundle_of_a_checkout_and_is_none_outside_git(checkout, tmp_path, monkeypatch):
    committed = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    monkeypatch.setenv("GIT_COMMITTER_DATE", committed.isoformat())
    (checkout / "pyproject.toml").write_text("[project]\nname = 'queue-mood'\nversion = '0.2'\n")
    git(checkout, "commit", "-q", "-a", "-m", "two")
    assert commit_time(checkout) == committed.timestamp()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "pyproject.toml").write_text("")
    assert commit_time(plain) is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert commit_time(checkout) is None


@needs_git
def test_a_running_checkout_reads_its_commit_from_dot_git_without_git(checkout, tmp_path):
    head = git(checkout, "rev-parse", "HEAD")
    assert checkout_commit(checkout) == head[:12]  # refs/heads/main, a file
    git(checkout, "pack-refs", "--all")
    assert not (checkout / ".git/refs/heads/main").exists()
    assert checkout_commit(checkout) == head[:12]  # from packed-refs
    git(checkout, "commit", "-q", "--allow-empty", "-m", "two")
    wt = tmp_path / "wt"
    git(checkout, "worktree", "add", "-q", "-b", "other", str(wt), "HEAD~1")
    assert (wt / ".git").is_file()
    assert checkout_commit(wt) == head[:12]  # a worktree's HEAD, its branch in the common folder
    git(checkout, "checkout", "-q", "--detach", "HEAD")
    assert checkout_commit(checkout) == git(checkout, "rev-parse", "HEAD")[:12]
    assert checkout_commit(tmp_path) is None  # no .git at all


def installed_copy(tmp_path: Path, manifest: dict | None) -> tuple[Path, Path]:
    """This checkout's edge package laid out as install.sh installs a bundle under a PREFIX of the
    store's choosing (the package in PREFIX/venv, the model in PREFIX/model, the bundle's MANIFEST
    beside it); (PREFIX, the site-packages folder)."""
    prefix = tmp_path / "opt/qm"
    site = prefix / "venv/lib/python3.11/site-packages"
    shutil.copytree(REPO / "edge", site / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    (prefix / "model").mkdir()
    for f in (REPO / "edge/models/default").glob("model*"):
        shutil.copy2(f, prefix / "model" / f.name)
    if manifest is not None:
        (prefix / "MANIFEST.json").write_text(json.dumps(manifest))
    return prefix, site


def from_copy(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=site.parents[3], env={**os.environ, "PYTHONPATH": str(site)})


MADE = "2026-12-02T17:41:47+00:00"


def test_version_and_doctor_of_an_install_say_the_bundles_commit_and_date(tmp_path):
    _, site = installed_copy(tmp_path, {"created": MADE, "commit": "0123456789ab-dirty", "files": {}})
    proc = from_copy(site, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"queue-mood 0.1.0, commit 0123456789ab-dirty, bundle made {MADE}"
    doctor = from_copy(site, "doctor", "--json")
    (release,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "release"]
    assert release == {"name": "release", "status": "OK", "detail": proc.stdout.strip()}


def test_an_install_from_a_bundle_that_recorded_no_commit_says_so_and_never_takes_a_checkouts(tmp_path):
    _, site = installed_copy(tmp_path, {"created": MADE, "files": {}})  # a bundle from before commits were recorded
    proc = from_copy(site, "--version")
    assert proc.stdout.strip() == f"queue-mood 0.1.0, bundle made {MADE}", proc.stderr
    (site.parents[3] / "MANIFEST.json").write_text("{not json")  # damaged: nothing known, no traceback
    proc = from_copy(site, "--version")
    assert proc.returncode == 0 and "commit unknown" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_a_monitor_run_from_an_install_shows_its_release_in_status_and_metrics(long_video, tmp_path):
    """What head office reads of each Pi: /status `release` and queue_mood_info's labels."""
    parser = pytest.importorskip("prometheus_client.parser", reason="/metrics needs prometheus_client (edge extra)")
    import hashlib
    import urllib.request

    prefix, site = installed_copy(tmp_path, {"created": MADE, "commit": "0123456789ab", "files": {}})
    model = prefix / "model/model_int8.tflite"
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    run = EdgeRun(long_video, tmp_path / "run", "till-4", f'[model]\npath = "{model}"\n', package=site)
    try:
        status = run.wait_until(lambda s: s["frames"] > 0)
        req = urllib.request.Request(f"http://127.0.0.1:{run.port}/metrics",
                                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read().decode()
    finally:
        run.stop()
    assert status["release"] == {"version": "0.1.0", "commit": "0123456789ab", "bundle_created": MADE,
                                 "model_sha256": sha}
    (info,) = [s for f in parser.text_string_to_metric_families(body) for s in f.samples if s.name == "queue_mood_info"]
    assert info.labels == {"device": "till-4", "runtime": status["runtime"], "version": "0.1.0",
                           "commit": "0123456789ab", "bundle_created": MADE, "model_sha256": sha[:12]}
    assert "0123456789ab" in run.log.read_text()  # the journal's first line says which release started
