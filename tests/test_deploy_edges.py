"""Edges of deployment found in review: detector files other than .tflite, a kept config with a
BOM or that does not parse, a bundle unpacked over an older one, --out at a folder, the doctor's
JSON-lines and `~` checks as root, and a 32-bit OS. install.sh runs unprivileged into a temp
root, as in test_deploy."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.config import load_config
from edge.ops.bundle import BundleSettings, readme_text
from edge.ops.bundle import run as bundle_run
from edge.ops.doctor.context import FAIL, OK, WARN
from edge.ops.doctor.sinks import sink_verdict
from edge.sinks.jsonl import JsonlSink
from tests.test_deploy import (DEPLOY, REPO, assert_install_sentence, assert_one_sentence, fake_apt, fake_bundle,
                               fake_install_env, install)
from tests.conftest import run_cli

CASCADE = "haarcascade_frontalface_default.xml"


def fake_wheel(folder: Path, version: str = "0.1.0") -> Path:
    """A queue_mood wheel that passes edge bundle's check (install.sh's pip is a stand-in)."""
    wheel = folder / f"queue_mood-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"queue_mood-{version}.dist-info/METADATA", "Name: queue-mood\n")
    return wheel


# -- 1. every detector file the bundle carries is installed ----------------------------------


@pytest.mark.slow
def test_a_bundled_haar_cascade_is_installed_where_the_config_points(tmp_path):
    (tmp_path / CASCADE).write_text("<opencv_storage/>\n")
    store = tmp_path / "store.toml"
    store.write_text(f'[detector]\nkind = "haar"\nmodel = "{tmp_path / CASCADE}"\n')
    bundle = tmp_path / "b"
    result = bundle_run(BundleSettings(out=str(bundle), config=str(store), wheel=str(fake_wheel(tmp_path))))
    assert f"detector/{CASCADE}" in result.files
    env = fake_install_env(tmp_path)
    proc = install(bundle, env)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(Path(env["ETC_DIR"]) / "config.toml")
    assert cfg.detector.model == f"{env['PREFIX']}/detector/{CASCADE}"
    assert Path(cfg.detector.model).read_text() == "<opencv_storage/>\n"  # else the service crash-loops


def test_install_sh_installs_each_file_under_detector_and_skips_folders(tmp_path):
    b = fake_bundle(tmp_path)
    (b / "detector" / "sub").mkdir(parents=True)
    for name in ("face_detection_yunet_2023mar.onnx", CASCADE, "face_detection_short_range.tflite"):
        (b / "detector" / name).write_text(name)
    env = fake_install_env(tmp_path)
    proc = install(b, env)
    assert proc.returncode == 0, proc.stderr
    installed = Path(env["PREFIX"]) / "detector"
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        ("face_detection_yunet_2023mar.onnx", CASCADE, "face_detection_short_range.tflite"))
    assert (installed / CASCADE).read_text() == CASCADE


# -- 2. the config install.sh reads for apt: a BOM, or one that does not parse -----------------


def config_value(path: Path, key: str) -> subprocess.CompletedProcess:
    """install.sh's own config_value function, run alone."""
    text = (DEPLOY / "install.sh").read_text()
    start = text.index("config_value() {")
    func = text[start:text.index("\n}\n", start) + 3]
    return subprocess.run(["bash", "-c", f'{func}\nconfig_value "$1" "$2"', "-", str(path), key], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=60)


@pytest.mark.parametrize("content, want", [
    ('\ufeff[detector]\nkind = "haar"\n'.encode(), "haar"),  # saved by Windows Notepad; edge reads it
    (b'[detector]\nkind = "haar"\n', "haar"),
    (b"[detector\nkind = 'haar'\n", ""),  # not TOML: the config check refuses it later
    (b"\xff\xfe[detector]\n", ""),  # not UTF-8
    (None, ""),  # no such file
    (b"[detector]\n", ""),
])
def test_install_sh_config_value_reads_a_bom_and_never_tracebacks(tmp_path, content, want):
    cfg = tmp_path / "config.toml"
    if content is not None:
        cfg.write_bytes(content)
    proc = config_value(cfg, "detector.kind")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == want


@pytest.mark.slow
def test_install_sh_refuses_a_kept_config_that_is_not_toml_in_one_sentence(tmp_path):
    env = fake_install_env(tmp_path)
    assert install(fake_bundle(tmp_path, "0.1.0"), env).returncode == 0
    kept = Path(env["ETC_DIR"]) / "config.toml"
    kept.write_text("[status\nport = 8765\n")
    if os.geteuid() == 0:  # the apt step reads the config too: only as root
        env.update(QM_SKIP_APT="0", PATH=f"{fake_apt(tmp_path)}:{env['PATH']}")
    proc = install(fake_bundle(tmp_path, "0.2.0"), env)
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("install.sh: ")]
    assert line.startswith(f"install.sh: {kept} does not load with this version: Config file {kept} is not valid TOML")
    assert line.endswith("then: sudo systemctl restart queue-mood.service")


def test_install_sh_as_root_installs_opencv_data_for_a_kept_haar_config_with_a_bom(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("install.sh runs apt only as root")
    env = fake_install_env(tmp_path)
    kept = Path(env["ETC_DIR"]) / "config.toml"
    kept.parent.mkdir(parents=True)
    kept.write_bytes('\ufeff[detector]\nkind = "haar"\n'.encode())
    env.update(QM_SKIP_APT="0", PATH=f"{fake_apt(tmp_path)}:{env['PATH']}")
    proc = install(fake_bundle(tmp_path), env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "does not load" not in proc.stderr, proc.stderr
    (installed,) = [ln for ln in (tmp_path / "apt.log").read_text().splitlines() if " install " in ln]
    assert "opencv-data" in installed.split()


# -- 3. a new bundle unpacked over an older one -------------------------------------------------


def test_install_sh_says_what_to_run_when_a_bundle_was_unpacked_over_an_older_one(tmp_path):
    b = fake_bundle(tmp_path, "0.2.0")
    (b / "wheels" / "queue_mood-0.1.0-py3-none-any.whl").write_bytes(b"old wheel")  # what tar xzf left
    env = fake_install_env(tmp_path)
    proc = install(b, env)
    assert_install_sentence(proc, "found 2", "an older bundle was unpacked", f"rm -rf {b} && tar xzf",
                            f"-C {tmp_path} && sudo {b}/install.sh", "Nothing was changed")
    assert not Path(env["ETC_DIR"]).exists() and not (tmp_path / "python.log").exists()


def test_the_bundles_readme_removes_the_old_folder_before_unpacking():
    manifest = {"created": "now", "version": "0.2.0",
                "model": {"architecture": "m", "accuracy": None, "accuracy_of": None, "sha256": "0" * 64}}
    archive = readme_text(manifest, "till-3.tar.gz", "till-3.tar.gz")
    assert "ssh pi@HOST 'rm -rf queue-mood-bundle && tar xzf till-3.tar.gz && sudo ./queue-mood-bundle/install.sh'" \
        in archive
    folder = readme_text(manifest, None, "pi-bundle")
    assert folder.index("ssh pi@HOST 'rm -rf pi-bundle'") < folder.index("scp -r pi-bundle pi@HOST:")


def test_the_bundles_readme_says_how_to_undo_an_upgrade_and_when_a_failed_start_is_tried_again():
    """README.txt is what the store's IT person keeps with the bundle: install.sh's rollback line
    has scrolled away by the day an upgrade misbehaves; and a setting the service refuses is tried
    again about once a minute (edge run waits before it exits), not 5 seconds after."""
    manifest = {"created": "now", "version": "0.2.0",
                "model": {"architecture": "m", "accuracy": None, "accuracy_of": None, "sha256": "0" * 64}}
    text = readme_text(manifest, "till-3.tar.gz", "till-3.tar.gz")
    assert "sudo /opt/queue-mood/bundle.previous/install.sh" in text
    assert "5 seconds after any failure" not in text and "about once a minute" in text


def readme_unpack_problems(text: str) -> list[str]:
    """Lines of README.md that unpack a bundle without removing an older one's folder first."""
    lines = text.splitlines()
    problems = []
    for i, line in enumerate(lines):
        if "tar xzf" in line and "queue-mood-bundle.tar.gz" in line:
            if line.startswith("ExecStart="):
                if lines[i - 1] != "ExecStart=/bin/rm -rf /root/queue-mood-bundle":
                    problems.append(line)
            elif "rm -rf queue-mood-bundle && tar xzf" not in line:
                problems.append(line)
    return problems


def test_readme_removes_the_old_folder_wherever_it_unpacks_a_bundle():
    text = (REPO / "README.md").read_text()
    assert text.count("tar xzf") >= 3
    assert readme_unpack_problems(text) == []


# -- 4. --out naming a folder that ends in .tar.gz -----------------------------------------------


def test_bundle_out_at_a_folder_named_like_an_archive_is_one_sentence_before_any_work(tmp_path):
    out = tmp_path / "d.tar.gz"
    out.mkdir()
    proc = run_cli("bundle", "--wheel", fake_wheel(tmp_path), "--out", out, timeout=300)
    assert_one_sentence(proc, f"--out {out} is a folder", "choose another --out")
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.tar.gz", "queue_mood-0.1.0-py3-none-any.whl"]


@pytest.mark.parametrize("out", ["b.tar.gz", "b"])
def test_bundle_on_a_full_disk_is_one_sentence_and_leaves_nothing_behind(tmp_path, monkeypatch, out):
    import errno

    from edge.errors import UserError
    from edge.ops import bundle

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle.shutil, "copyfile", full)  # every file the bundle copies in
    wheel = fake_wheel(tmp_path)
    with pytest.raises(UserError, match=r"Writing the bundle .* failed \(No space left on device\); free some space"):
        bundle_run(BundleSettings(out=str(tmp_path / out), wheel=str(wheel)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]  # no staging folder, no half bundle


def test_bundle_failing_to_read_a_file_names_it_instead_of_asking_for_space(tmp_path, monkeypatch):
    import errno

    from edge.errors import UserError
    from edge.ops import bundle

    def unreadable(src, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(src))

    monkeypatch.setattr(bundle.shutil, "copyfile", unreadable)
    with pytest.raises(UserError, match=r"failed \(Input/output error\); check .+ and run it again\.$"):
        bundle_run(BundleSettings(out=str(tmp_path / "b.tar.gz"), wheel=str(fake_wheel(tmp_path))))


# -- 5. the doctor's JSON-lines check writes for real ---------------------------------------------


@pytest.mark.parametrize("path", ["/proc/x/y.jsonl", "/proc/version", "/etc/hostname/alerts.jsonl"])
def test_jsonl_check_fails_a_path_no_one_can_write_even_as_root(path):
    line = JsonlSink(path).check()
    assert line.startswith(f"cannot write {path} (") and sink_verdict(line) == FAIL, line


def test_jsonl_check_leaves_no_file_behind_and_an_existing_log_as_it_was(tmp_path):
    deep = tmp_path / "a" / "b" / "alerts.jsonl"
    assert JsonlSink(str(deep)).check() == f"writes {deep}"
    near = tmp_path / "alerts.jsonl"
    assert JsonlSink(str(near)).check() == f"writes {near}"
    assert list(tmp_path.iterdir()) == []  # no probe file or folder left, nor the log itself
    near.write_bytes(b'{"event": 1}\npartial')  # even a torn last line is left alone
    before = near.stat()
    assert JsonlSink(str(near)).check() == f"writes {near}"
    assert near.read_bytes() == b'{"event": 1}\npartial' and near.stat().st_mtime_ns == before.st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == ["alerts.jsonl"]
    os.mkfifo(tmp_path / "fifo.jsonl")  # no reader: must not hang the doctor
    assert JsonlSink(str(tmp_path / "fifo.jsonl")).check().startswith("cannot write")


# -- 6. `~` in the service's config is the service's home -----------------------------------------


@pytest.fixture
def service_layout(tmp_path, monkeypatch):
    """An installed layout in tmp_path: etc/config.toml is the service's config, its unit sets
    HOME to svc-home, and the doctor runs with the HOME of someone else (root under sudo)."""
    import edge.ops.bundle as bundle
    from edge.ops.doctor import config as doctor_config

    etc, state, home, own = tmp_path / "etc", tmp_path / "state", tmp_path / "svc-home", tmp_path / "root-home"
    for d in (etc, state, home, own):
        d.mkdir()
    unit = tmp_path / "queue-mood.service"
    unit.write_text(f"[Service]\nEnvironment=HOME={home}\nEnvironment=PYTHONUNBUFFERED=1\n")
    monkeypatch.setattr(bundle, "ETC_DIR", str(etc))
    monkeypatch.setattr(bundle, "STATE_DIR", str(state))
    monkeypatch.setattr(doctor_config, "UNIT_FILE", unit)
    monkeypatch.setenv("HOME", str(own))
    video = tmp_path / "queue.mp4"
    video.write_bytes(b"")
    text = f'[source]\npath = "{video}"\n[sinks.jsonl]\npath = "~/alerts.jsonl"\n[status]\nport = 0\n'
    (etc / "config.toml").write_text(text)
    return {"etc": etc, "state": state, "home": home, "own": own, "unit": unit, "text": text}


def doctor_rows(config: Path) -> dict:
    from edge.ops.doctor import DoctorSettings, diagnose

    return {c.name: c for c in diagnose(DoctorSettings(config=str(config)))}


def test_doctor_reads_tilde_in_the_service_config_as_the_service_home(service_layout):
    home, own = service_layout["home"], service_layout["own"]
    rows = doctor_rows(service_layout["etc"] / "config.toml")
    assert f"`~` in it is {home}, the service's HOME" in rows["config"].detail
    jsonl = rows["sink jsonl"]
    assert jsonl.status == OK and jsonl.detail.startswith(f"writes {home}/alerts.jsonl (~ is {home}, the service's HOME)")
    spool = f"{home}/.local/state/queue-mood/spool"  # the default spool_dir, under ~
    assert f"at {spool} (~ is {home}" in rows["disk"].detail
    assert os.environ["HOME"] == str(own) and list(own.iterdir()) == [] and list(home.iterdir()) == []
    service_layout["unit"].unlink()  # no unit to read: the bundled unit's HOME, the state folder
    rows = doctor_rows(service_layout["etc"] / "config.toml")
    assert rows["sink jsonl"].detail.startswith(f"writes {service_layout['state']}/alerts.jsonl")


def test_doctor_as_root_keeps_its_caches_out_of_the_service_home(service_layout, monkeypatch):
    """sudo edge doctor's camera probe left GStreamer's registry in the service's HOME, owned by root:
    the service could no longer update it."""
    from edge.ops.doctor import service
    from edge.ops.doctor.context import DoctorSettings, _Context

    monkeypatch.setattr(service.os, "geteuid", lambda: 0)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    ctx = _Context(DoctorSettings(config=str(service_layout["etc"] / "config.toml")))
    ctx.home = str(service_layout["home"])
    with service.service_home(ctx):
        cache = Path(os.environ["XDG_CACHE_HOME"])
        assert os.environ["HOME"] == str(service_layout["home"]) and cache.is_dir()
        assert service_layout["home"] not in cache.parents
        (cache / "gstreamer-1.0").mkdir()
    assert "XDG_CACHE_HOME" not in os.environ and not cache.exists()
    assert os.environ["HOME"] == str(service_layout["own"])


def test_doctor_reads_tilde_in_another_config_as_this_users_home(service_layout, tmp_path):
    other = tmp_path / "mine.toml"
    other.write_text(service_layout["text"])
    rows = doctor_rows(other)
    own = service_layout["own"]
    assert rows["sink jsonl"].detail == f"writes {own}/alerts.jsonl" and "HOME" not in rows["config"].detail


def hide_under(monkeypatch, folder: Path) -> None:
    """Paths under `folder` answer EACCES, as under /var/lib/queue-mood (0750) for a user outside
    the service's group; even root, which runs the tests, then sees what that user sees."""
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if str(self).startswith(f"{folder}/"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)


def test_doctor_with_paths_this_user_cannot_reach_says_so_in_its_rows(tmp_path, monkeypatch):
    hidden = tmp_path / "hidden"
    (hidden / "home").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(hidden / "home"))  # the default spool under it
    config = tmp_path / "store.toml"
    config.write_text(f'[source]\npath = "{hidden}/queue.mp4"\n[status]\nport = 0\n')
    hide_under(monkeypatch, hidden)
    rows = doctor_rows(config)  # was a PermissionError traceback
    assert rows["camera"].status == FAIL and "this user cannot reach (Permission denied)" in rows["camera"].detail
    assert rows["disk"].status == OK  # the free space of the nearest folder it can see
    assert "spool" not in rows or rows["spool"].status == WARN  # root may write there; another user gets a WARN


def test_doctor_names_the_file_it_could_not_read_not_always_the_config(tmp_path, monkeypatch):
    import edge.config

    config = tmp_path / "store.toml"
    config.write_text("")
    spool = "/var/lib/queue-mood/spool"

    def load_config(*args, **kwargs):  # the config's spool_dir checked under a folder this user may not enter
        raise PermissionError(13, "Permission denied", spool)

    monkeypatch.setattr(edge.config, "load_config", load_config)
    row = doctor_rows(config)["config"]
    assert row.status == FAIL and row.detail.startswith(f"cannot read {spool} (Permission denied); try sudo")


def test_unit_home_takes_the_last_home_of_the_unit_and_its_drop_ins(tmp_path):
    from edge.ops.doctor.config import service_paths_verdict, unit_home

    unit = tmp_path / "queue-mood.service"
    assert unit_home(unit, "/var/lib/queue-mood") == "/var/lib/queue-mood"  # not installed
    unit.write_text('[Service]\nEnvironment="HOME=/srv/a" LANG=C.UTF-8\nExecStart=/bin/true\n')
    assert unit_home(unit, "/var/lib/queue-mood") == "/srv/a"
    (tmp_path / "queue-mood.service.d").mkdir()
    (tmp_path / "queue-mood.service.d" / "override.conf").write_text("[Service]\nEnvironment=HOME=/srv/b\n")
    assert unit_home(unit, "/var/lib/queue-mood") == "/srv/b"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.toml").write_text('[status]\nhistory_db = "~/h.db"\n')
    cfg = load_config(tmp_path / "etc" / "config.toml")
    args = (cfg, str(tmp_path / "etc" / "config.toml"), str(tmp_path / "etc"), "/var/lib/queue-mood")
    assert service_paths_verdict(*args, "/var/lib/queue-mood")[0] == OK
    assert service_paths_verdict(*args, "/srv/b")[0] == WARN  # a home outside the state folder


def test_doctor_fails_a_file_the_services_sandbox_hides_from_it(service_layout):
    """sudo edge doctor read model.path /home/pi/... (or a recording in /tmp) and said OK; the service,
    whose unit sets ProtectHome=yes and PrivateTmp=yes, finds no such file there and never starts."""
    etc, unit = service_layout["etc"], service_layout["unit"]
    unit.write_text(unit.read_text() + "ProtectHome=yes\nPrivateTmp=yes\n")
    (etc / "config.toml").write_text(service_layout["text"] + '[model]\npath = "/home/pi/model_int8.tflite"\n'
                                     '[sinks.command]\nargv = ["/root/notify.sh", "--till", "3"]\n')
    row = doctor_rows(etc / "config.toml")["service sandbox"]
    assert row.status == FAIL and row.detail.startswith(
        "the service cannot see model.path /home/pi/model_int8.tflite (ProtectHome=yes in its unit: /home is empty to "
        "it); "), row.detail
    assert "sinks.command.argv /root/notify.sh (ProtectHome=yes in its unit: /root is empty to it)" in row.detail
    (unit.parent / (unit.name + ".d")).mkdir()  # a drop-in that lets it read the homes
    (unit.parent / (unit.name + ".d") / "homes.conf").write_text("[Service]\nProtectHome=read-only\n")
    rows = doctor_rows(etc / "config.toml")
    assert "service sandbox" not in rows or "ProtectHome" not in rows["service sandbox"].detail
    # no unit to read: the bundled one's sandbox, which hides them
    from edge.ops.doctor.config import sandbox_verdict

    cfg = load_config(None, {"source.path": "/tmp/queue.mp4", "detector.model": "~/face.tflite"})
    status, detail = sandbox_verdict(cfg, unit.parent / "none.service", "/home/qm")
    assert status == FAIL and "detector.model ~/face.tflite (ProtectHome=yes" in detail
    assert "source.path /tmp/queue.mp4 (PrivateTmp=yes in its unit: /tmp is its own, empty to it)" in detail
    assert sandbox_verdict(load_config(None, {"source.path": "rtsp://cam.local/s"}), unit, "/var/lib/queue-mood") is None


# -- 7. a 32-bit OS is refused before anything changes --------------------------------------------


@pytest.mark.parametrize("machine", ["armv7l", "armv6l", "i686"])
def test_install_sh_refuses_a_32_bit_os_before_anything_changes(tmp_path, machine):
    env = {**fake_install_env(tmp_path, venv=False), "QM_MACHINE": machine}
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "this bundle needs a 64-bit OS", f"this machine is {machine}:",
                            "Raspberry Pi OS Lite (64-bit)", "Nothing was changed")
    assert not (tmp_path / "root").exists()


def test_install_sh_refuses_a_32_bit_userland_on_a_64_bit_kernel(tmp_path):
    """32-bit Raspberry Pi OS on a Pi 4 or 5: uname -m says aarch64, getconf LONG_BIT 32."""
    bin_ = tmp_path / "bin32"
    bin_.mkdir()
    (bin_ / "uname").write_text("#!/bin/sh\necho aarch64\n")
    (bin_ / "getconf").write_text('#!/bin/sh\n[ "$1" = LONG_BIT ] && echo 32\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = fake_install_env(tmp_path, venv=False)
    env["PATH"] = f"{bin_}:{env['PATH']}"
    proc = install(fake_bundle(tmp_path), env)
    assert_install_sentence(proc, "this machine is aarch64 with a 32-bit userland", "Nothing was changed")
    assert not (tmp_path / "root").exists()


def test_install_sh_goes_on_on_aarch64(tmp_path):
    env = {**fake_install_env(tmp_path), "QM_MACHINE": "aarch64"}
    proc = install(fake_bundle(tmp_path), env)
    assert proc.returncode == 0, proc.stderr
    help_ = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--help"], capture_output=True, text=True)
    assert "QM_MACHINE" in help_.stdout


@pytest.fixture
def open_tmp():
    """A temp folder every user may search down to (pytest's tmp_path is under a 0700 folder)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def test_may_reads_the_mode_bits_of_the_path_and_the_folders_above_it(open_tmp):
    from edge.ops.doctor.service import may

    tmp_path = open_tmp
    other, group = os.getuid() + 4242, os.getgid()
    folder = tmp_path / "state"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    tmp_path.chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text("")
    config.chmod(0o640)
    assert may(config, other, {group}) and not may(config, other, set())  # by its group, as root:queue-mood 0640
    assert not may(config, other, {group}, write=True)
    assert may(folder / "new.db", other, {group}) is False  # a folder of the group's, not writable by it
    folder.chmod(0o770)
    assert may(folder / "new.db", other, {group}, write=True) and not may(folder / "new.db", other, set())
    tmp_path.chmod(0o700)  # the folder above no longer searchable
    assert not may(config, other, {group})
    assert may(config, 0, set())


def test_doctor_as_root_fails_a_config_and_spool_the_service_user_cannot_use(shipped_model, monkeypatch, open_tmp):
    """Every other check reads and writes as root under sudo: a config moved in with mode 0600 or a
    spool left root's passed them all, and the service then stopped at each start."""
    import shutil

    import edge.ops.bundle as bundle
    from edge.ops.doctor import config as doctor_config
    from edge.ops.doctor import service

    root = open_tmp
    etc, state, model = root / "etc", root / "state", root / "model"
    for d in (etc, state / "spool", model):
        d.mkdir(parents=True)
        d.chmod(0o755)
    for f in (shipped_model, shipped_model.with_name("model.json")):
        shutil.copy(f, model / f.name)
    monkeypatch.setattr(bundle, "ETC_DIR", str(etc))
    monkeypatch.setattr(bundle, "STATE_DIR", str(state))
    monkeypatch.setattr(doctor_config, "UNIT_FILE", root / "none.service")
    monkeypatch.setattr(service, "SERVICE", "nobody")
    monkeypatch.setattr(service.os, "geteuid", lambda: 0)
    config = etc / "config.toml"
    config.write_text(f'[source]\npath = "{root}/queue.mp4"\n[model]\npath = "{model}/{shipped_model.name}"\n'
                      f'[sinks]\nspool_dir = "{state}/spool"\n[status]\nport = 0\n')
    config.chmod(0o600)
    row = doctor_rows(config)["service access"]
    assert row.status == FAIL and f"nobody may not read {config}; write {state}/spool: it would stop" in row.detail
    config.chmod(0o644)
    (state / "spool").chmod(0o777)
    row = doctor_rows(config)["service access"]
    assert row.status == OK, row.detail


def test_install_sh_refuses_a_bundle_whose_wheel_or_model_was_cut_short_before_changing_anything(tmp_path):
    """A wheel cut short made pip say "invalid wheel", and install.sh then asked for PyPI access."""
    import hashlib
    import json

    bundle = fake_bundle(tmp_path)
    files = {n: hashlib.sha256((bundle / n).read_bytes()).hexdigest()
             for n in ("wheels/queue_mood-0.1.0-py3-none-any.whl", "model/model_int8.tflite", "config.toml")}
    (bundle / "MANIFEST.json").write_text(json.dumps({"files": files}))
    (bundle / "config.toml").write_text("# edited before the install: allowed\n[status]\nport = 8765\n")
    env = fake_install_env(tmp_path)
    assert install(bundle, env).returncode == 0
    wheel = bundle / "wheels/queue_mood-0.1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:-2])
    (tmp_path / "python.log").unlink()
    proc = install(bundle, env)
    assert_install_sentence(proc, "lists another sha256 for wheels/queue_mood-0.1.0-py3-none-any.whl in",
                            "copy the .tar.gz again", "Nothing was changed")
    assert not (tmp_path / "python.log").exists()  # pip never ran


def test_the_reinstall_command_for_another_prefix_runs_as_printed_and_names_what_the_rollback_line_does():
    """A store's PREFIX with a space ("/srv/queue mood") made `sudo PREFIX=/srv/queue mood /srv/...`, which
    runs a program named "mood"; and it left out PYTHON, which install.sh's rollback line names."""
    import shlex

    from edge.ops.bundle import reinstall_bundle

    said = reinstall_bundle("/srv/queue mood")
    command = said.split(",")[0]
    assert shlex.split(command) == ["sudo", "PREFIX=/srv/queue mood", "/srv/queue mood/bundle/install.sh"], said
    assert "ETC_DIR, STATE_DIR, UNIT_DIR and PYTHON" in said, said


# -- 8. the config's secrets and the MANIFEST anyone may read --------------------------------------


@pytest.mark.slow
def test_no_file_of_a_bundle_or_its_install_but_the_config_holds_the_configs_sha256(tmp_path):
    """MANIFEST.json is readable by all (0644 in a folder bundle and in PREFIX): a sha256 of a config
    of mostly known defaults there let anyone test guesses of its token or passwords offline."""
    import hashlib
    import json

    store = tmp_path / "store.toml"
    store.write_text('[status]\ntoken = "till3-token-0001"\n[sinks.mqtt]\nhost = "broker.local"\npassword = "pw1"\n')
    bundle = tmp_path / "b"
    bundle_run(BundleSettings(out=str(bundle), config=str(store), wheel=str(fake_wheel(tmp_path))))
    digest = hashlib.sha256((bundle / "config.toml").read_bytes()).hexdigest().encode()
    assert [p.name for p in bundle.rglob("*") if p.is_file() and digest in p.read_bytes()] == []
    env = fake_install_env(tmp_path)
    assert install(bundle, env).returncode == 0
    installed = Path(env["PREFIX"]) / "MANIFEST.json"
    assert digest not in installed.read_bytes()
    manifest = json.loads(installed.read_text())  # still the release: edge --version, /status, the doctor
    assert manifest["created"] and manifest["files"]["model/model_int8.tflite"]
    model = bundle / "model/model_int8.tflite"  # and install.sh still checks the program and model
    model.write_bytes(model.read_bytes()[:-2])
    assert_install_sentence(install(bundle, env), "lists another sha256 for model/model_int8.tflite")


# -- 9. a .tar.gz copied short, unpacked as far as it goes ---------------------------------------


def test_install_sh_from_a_tar_gz_cut_short_says_to_copy_it_again_not_that_it_is_no_bundle(tmp_path):
    """tar stops at the cut ("Unexpected EOF") leaving the files before it: cut in the model, there was
    no queue-mood.service nor wheel, and install.sh said "not a complete queue-mood bundle (make one with
    `edge bundle`)" of a bundle edge bundle had made; the copy is what to redo."""
    import hashlib
    import json
    import tarfile

    bundle = fake_bundle(tmp_path)
    (bundle / "model" / "model_int8.tflite").write_bytes(os.urandom(1 << 20))  # random: gzip keeps its size
    files = {n: hashlib.sha256((bundle / n).read_bytes()).hexdigest()
             for n in ("wheels/queue_mood-0.1.0-py3-none-any.whl", "model/model_int8.tflite", "model/model.json")}
    (bundle / "MANIFEST.json").write_text(json.dumps({"files": files}))
    whole = tmp_path / "queue-mood-bundle.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:  # edge bundle's order: the model before the unit and the wheel
        tar.add(bundle, arcname="queue-mood-bundle")
    cut = tmp_path / "copied" / whole.name
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    untar = subprocess.run(["tar", "xzf", cut.name], cwd=cut.parent, capture_output=True, text=True)
    unpacked = cut.parent / "queue-mood-bundle"
    assert untar.returncode != 0 and (unpacked / "install.sh").is_file()
    assert not (unpacked / "queue-mood.service").exists()
    env = fake_install_env(tmp_path)
    proc = install(unpacked, env)
    assert_install_sentence(proc, f"{unpacked} lacks wheels/queue_mood-0.1.0-py3-none-any.whl", "cut short",
                            "copy the .tar.gz again", "Nothing was changed")
    assert not Path(env["ETC_DIR"]).exists() and not (tmp_path / "python.log").exists()
