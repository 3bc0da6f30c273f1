"""install.sh's files step: everything it replaces is staged beside its target and swapped in at the
end, the model and its card as one folder. Killed or interrupted at any call of that step, an
install leaves the old files or the new ones, each whole (never a model with another model's card,
which the service refuses); a full disk while staging is one sentence and changes nothing. install.sh
runs unprivileged into a temp root, as in test_deploy."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.test_deploy import UNIT, assert_install_sentence, fake_bundle, fake_install_env, install

# Each test installs twice or more (3-7 s here), the sweeps once per call of the files step.
pytestmark = pytest.mark.slow

# what the files step (and keep_bundle after it) runs; python only where it trades two folders' places
COMMANDS = ("install", "cp", "mv", "rm", "sync", "chmod", "sed")


def bundle(tmp_path: Path, version: str) -> Path:
    """fake_bundle with a card, a detector file, a unit and a MANIFEST.json of the version's own."""
    b = fake_bundle(tmp_path, version)
    (b / "model" / "model.json").write_text(json.dumps({"version": version}))
    (b / "detector").mkdir()
    (b / "detector" / "face_detection_yunet_2023mar.onnx").write_text(f"detector {version}")
    (b / "queue-mood.service").write_text(UNIT.read_text() + f"# {version}\n")
    (b / "MANIFEST.json").write_text(json.dumps({"created": version, "files": {}}))
    return b


def installed(env: dict) -> dict:
    """What the service reads, each file's text (None: absent)."""
    prefix, etc = Path(env["PREFIX"]), Path(env["ETC_DIR"])
    paths = {"pair": (prefix / "model/model_int8.tflite", prefix / "model/model.json"),
             "detector": (prefix / "detector/face_detection_yunet_2023mar.onnx",),
             "config": (etc / "config.toml",), "config.bundle": (etc / "config.toml.bundle",),
             "unit": (Path(env["UNIT_DIR"]) / "queue-mood.service",), "manifest": (prefix / "MANIFEST.json",)}
    return {k: tuple(p.read_text() if p.exists() else None for p in ps) for k, ps in paths.items()}


def leftovers(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith((".new", ".new.old")))


def wrapped(tmp_path: Path, env: dict, kill_at: int = 0, sig: str = "KILL") -> dict:
    """env with COMMANDS (and PYTHON, where it exchanges folders) logging each call to calls.log and,
    at call number kill_at, signalling the install's whole process group before running it."""
    bin_ = tmp_path / "wrapbin"
    shutil.rmtree(bin_, ignore_errors=True)
    bin_.mkdir()
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    count = (f'for a; do last=$a; done; echo "$(basename "$0") $last" >> "{log}"\n'  # one line a call
             f'[ "$(wc -l < "{log}")" -ne {kill_at} ] || kill -{sig} 0\n')
    for name in COMMANDS:
        (bin_ / name).write_text(f'#!/bin/sh\n{count}exec "{shutil.which(name)}" "$@"\n')
    (bin_ / "python").write_text(f'#!/bin/sh\ncase "$*" in *RENAME_EXCHANGE*)\n{count};; esac\n'
                                 f'exec "{env["PYTHON"]}" "$@"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return {**env, "PATH": f"{bin_}:{env['PATH']}", "PYTHON": str(bin_ / "python")}


def run_group(bundle_dir: Path, env: dict) -> subprocess.CompletedProcess:
    """install.sh in a process group of its own (the wrappers signal it all, as Ctrl-C or a power cut
    would), with SIGINT not ignored (bash cannot trap a signal ignored when it starts)."""
    return subprocess.run(["bash", str(bundle_dir / "install.sh")], capture_output=True, text=True, env=env,
                          timeout=120, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.fixture
def upgrade(tmp_path):
    """A root with 0.1.0 installed (and its copy to restore), the 0.2.0 bundle, and both states."""
    env = fake_install_env(tmp_path)
    root = Path(env["PREFIX"]).parents[1]
    assert install(bundle(tmp_path, "0.1.0"), env).returncode == 0
    old = installed(env)
    shutil.copytree(root, tmp_path / "root.0.1.0", symlinks=True)
    new_bundle = bundle(tmp_path, "0.2.0")
    proc = run_group(new_bundle, wrapped(tmp_path, env))
    assert proc.returncode == 0, proc.stderr
    new = installed(env)
    calls = (tmp_path / "calls.log").read_text().splitlines()

    def restore():
        shutil.rmtree(root)
        shutil.copytree(tmp_path / "root.0.1.0", root, symlinks=True)
    restore()
    return env, root, restore, new_bundle, old, new, calls


def assert_old_or_new(now: dict, old: dict, new: dict, where: str):
    for key in now:
        assert now[key] in (old[key], new[key]), f"{key} is neither the old nor the new one {where}: {now[key]}"


@pytest.mark.parametrize("sig", ["KILL", "INT"])
def test_install_sh_stopped_at_any_call_of_the_files_step_leaves_old_or_new_files_whole(upgrade, tmp_path, sig):
    """Each file was replaced by a rename of its own: a kill (a power cut) or Ctrl-C between the model's
    and the card's left a pair the service refuses until someone ran install.sh again."""
    env, root, restore, new_bundle, old, new, calls = upgrade
    assert old["pair"] != new["pair"] and old["config"] == new["config"] and old["config.bundle"] == (None,)
    first = next(i for i, c in enumerate(calls) if c.startswith("install "))  # the files step's first call
    last = next(i for i, c in enumerate(calls) if "/bundle" in c)  # keep_bundle's first: the step is done
    for n in range(first + 1, last + 1):
        restore()
        proc = run_group(new_bundle, wrapped(tmp_path, env, kill_at=n, sig=sig))
        where = f"after {sig} at call {n} ({calls[n - 1]})"
        assert proc.returncode != 0, where
        assert "Traceback" not in proc.stderr, where
        assert_old_or_new(installed(env), old, new, where)
        if sig == "INT":  # interrupted, install.sh removes what it staged, and says what it left
            assert not leftovers(root), where
            said = "once the new program, model and files were in place" if installed(env) == new else \
                "before any of the model, detector, config and unit files was replaced"
            assert_install_sentence(proc, f"stopped by SIGINT {said}", "run install.sh again to finish")
        else:  # killed, it cannot: the next run clears it and finishes
            again = install(new_bundle, env)
            assert again.returncode == 0 and installed(env) == new and not leftovers(root), where + again.stderr


def test_install_sh_killed_between_its_swaps_leaves_the_model_and_card_a_pair(upgrade, tmp_path):
    """The fast case of the test above: killed right after the model folder was swapped in."""
    env, root, restore, new_bundle, old, new, calls = upgrade
    (first_swap,) = [i for i, c in enumerate(calls) if c.startswith("python")][:1]
    proc = run_group(new_bundle, wrapped(tmp_path, env, kill_at=first_swap + 2))
    assert proc.returncode == -signal.SIGKILL
    now = installed(env)
    assert now["pair"] == new["pair"] and now["manifest"] == old["manifest"]  # the manifest goes last
    assert install(new_bundle, env).returncode == 0 and installed(env) == new and not leftovers(root)


@pytest.mark.parametrize("command, target", [
    ("install", "*/model_int8.tflite"),  # the first file staged
    ("install", "*/MANIFEST.json.new"),  # the last: everything before it staged
    ("sed", "*/queue-mood.service"),  # the unit, written with its paths rewritten
])
def test_install_sh_full_disk_while_staging_is_one_sentence_and_changes_nothing(upgrade, tmp_path, command, target):
    """A full disk between two of the files' renames gave install's raw error and a model without
    its card; now nothing is replaced until everything is staged."""
    env, root, restore, new_bundle, old, new, calls = upgrade
    bin_ = tmp_path / "fullbin"
    bin_.mkdir()
    (bin_ / command).write_text(
        f'#!/bin/sh\nfor a; do last=$a; done\ncase "$last" in {target})\n'
        f'  echo "{command}: error writing \'$last\': No space left on device" >&2; exit 1;; esac\n'
        f'exec "{shutil.which(command)}" "$@"\n')
    (bin_ / command).chmod(0o755)
    proc = install(new_bundle, {**env, "PATH": f"{bin_}:{env['PATH']}"})
    assert_install_sentence(proc, "the disk is full: there was no room for ",
                            "none of the model, detector, config and unit files was changed",
                            "free some space", "run install.sh again to finish")
    assert "No space left on device" not in proc.stderr, proc.stderr
    assert installed(env) == old and not leftovers(root)


def test_install_sh_swaps_folders_by_renames_where_they_cannot_trade_places(upgrade, tmp_path):
    """A file system without renameat2's RENAME_EXCHANGE (or a C library without renameat2): the
    folders are swapped by three renames instead, and nothing is left beside them."""
    env, root, restore, new_bundle, old, new, calls = upgrade
    python = tmp_path / "python-no-exchange"
    python.write_text(f'#!/bin/sh\ncase "$*" in *RENAME_EXCHANGE*) exit 3;; esac\nexec "{env["PYTHON"]}" "$@"\n')
    python.chmod(0o755)
    proc = install(new_bundle, {**env, "PYTHON": str(python)})
    assert proc.returncode == 0, proc.stderr
    assert installed(env) == new and not leftovers(root)


def test_install_sh_a_rename_that_fails_is_one_sentence_and_leaves_each_file_whole(upgrade, tmp_path):
    env, root, restore, new_bundle, old, new, calls = upgrade
    bin_ = tmp_path / "mvbin"
    bin_.mkdir()
    (bin_ / "mv").write_text(f'#!/bin/sh\nfor a; do last=$a; done\ncase "$last" in *.service)\n'
                             f'  echo "mv: cannot move \'$1\': Read-only file system" >&2; exit 1;; esac\n'
                             f'exec "{shutil.which("mv")}" "$@"\n')
    (bin_ / "mv").chmod(0o755)
    proc = install(new_bundle, {**env, "PATH": f"{bin_}:{env['PATH']}"})
    assert_install_sentence(proc, "could not put the staged files in place (mv: cannot move",
                            "Read-only file system", "the files before that one are the new ones",
                            "run install.sh again to finish")
    now = installed(env)
    assert now["pair"] == new["pair"] and now["unit"] == old["unit"] and now["manifest"] == old["manifest"]
    assert not leftovers(root)


def test_install_sh_first_install_killed_at_a_rename_leaves_no_config_or_a_whole_one(tmp_path):
    """On a fresh Pi config.toml is written, never half: killed at any rename, it is absent or whole,
    and so are the model and its card."""
    env = fake_install_env(tmp_path)
    root = Path(env["PREFIX"]).parents[1]
    shutil.copytree(root, tmp_path / "root.empty", symlinks=True)
    b = bundle(tmp_path, "0.1.0")
    assert run_group(b, wrapped(tmp_path, env)).returncode == 0
    new = installed(env)
    renames = [i + 1 for i, c in enumerate((tmp_path / "calls.log").read_text().splitlines())
               if c.startswith(("python ", "mv ")) and "/bundle" not in c]
    assert len(renames) == 5, renames  # model, detector, config, unit, MANIFEST.json
    for n in renames + [renames[-1] + 1]:
        shutil.rmtree(root)
        shutil.copytree(tmp_path / "root.empty", root, symlinks=True)
        assert run_group(b, wrapped(tmp_path, env, kill_at=n)).returncode == -signal.SIGKILL
        now = installed(env)
        assert now["config"] in ((None,), new["config"]) and now["pair"] in ((None, None), new["pair"]), n
