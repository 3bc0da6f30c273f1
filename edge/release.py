"""Which release this monitor is, so head office can tell what each Pi runs: every wheel is
queue-mood 0.1.0, so the version alone tells no two bundles apart. The bundle's MANIFEST.json,
which install.sh copies into PREFIX beside model/, records when `edge bundle` made it and the
source commit; run from a git checkout, the commit is read from its .git folder.

Light on purpose (no numpy, no edge.ops): /metrics and `edge --version` import it.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from edge import __version__
from edge.paths import visible

# Where install.sh puts things on the Pi (edge.ops.bundle writes the bundle for these).
INSTALL_PREFIX = "/opt/queue-mood"
MODEL_DIR = f"{INSTALL_PREFIX}/model"
MANIFEST = "MANIFEST.json"  # in the bundle's top folder; install.sh copies it into PREFIX beside model/
COMMIT_LEN = 12  # hex digits of a commit or model sha256 shown: as unique as a fleet needs, short enough for a label


def installed_prefix(model_folder) -> Path | None:
    """The PREFIX install.sh installed into when `model_folder` is its model folder, else None.
    A store may choose another PREFIX=, so the folder is known by what install.sh leaves in
    PREFIX beside model/: the bundle's MANIFEST (a bundle's own folder holds one too, with
    install.sh beside it). An install from a bundle without a MANIFEST is known at INSTALL_PREFIX."""
    folder = Path(model_folder).absolute()
    prefix = folder.parent
    if folder == Path(MODEL_DIR):
        return prefix
    if folder.name == Path(MODEL_DIR).name and visible(prefix / MANIFEST, Path.is_file) \
            and not visible(prefix / "install.sh"):
        return prefix
    return None


def prefix_above(path) -> Path | None:
    """The PREFIX of the install that `path` (a file of the installed package, its venv) lies in, else None."""
    return next((p for p in Path(path).resolve().parents if installed_prefix(p / Path(MODEL_DIR).name) == p), None)


def _git(source: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()


def _git_checkout(source: Path) -> None:
    """Raises unless `source` is a git checkout of its own: its pyproject.toml tracked (not some
    other repository the folder lies in)."""
    _git(source, "ls-files", "--error-unmatch", "--", "pyproject.toml")


def source_commit(source: Path, shipped: Iterable[str] = ()) -> str | None:
    """For `edge bundle`: the commit checked out in `source`, with "-dirty" when its tracked files
    have changes not committed, or when a file of `shipped` (paths relative to `source`: what the
    wheel holds) is in no commit: a module not yet added to git goes into the wheel all the same.
    None when `source` is not a git checkout (its pyproject.toml not tracked) or git is missing."""
    try:
        _git_checkout(source)
        commit = _git(source, "rev-parse", "--verify", "HEAD")[:COMMIT_LEN]
        dirty = bool(_git(source, "status", "--porcelain", "--untracked-files=no"))
        if shipped and not dirty:
            tracked = set(_git(source, "ls-files", "-z").split("\0"))
            dirty = any(name not in tracked for name in shipped)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def commit_time(source: Path) -> int | None:
    """For `edge bundle`: when the commit checked out in `source` was made (its committer date,
    seconds since the epoch), the date its wheel and archive give their files, so that two
    bundles of one commit hold the same bytes; None where source_commit is None."""
    try:
        _git_checkout(source)
        return int(_git(source, "log", "-1", "--format=%ct", "HEAD"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _hex(text: str) -> str | None:
    return text[:COMMIT_LEN] if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text) else None


def checkout_commit(folder: Path) -> str | None:
    """The commit checked out in `folder`, read from its .git (HEAD, then the branch's ref file or
    packed-refs; a worktree's .git file names its folder): no git process. It cannot tell
    uncommitted changes (that takes git status), so it never says "-dirty"."""
    try:
        git = folder / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            text = git.read_text(encoding="utf-8").strip()
            if not text.startswith("gitdir:"):
                return None
            git = folder / text.removeprefix("gitdir:").strip()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return _hex(head)  # a detached HEAD
        ref = head.removeprefix("ref:").strip()
        common = git / (git / "commondir").read_text(encoding="utf-8").strip() if (git / "commondir").is_file() else git
        for base in (git, common):
            if (base / ref).is_file():
                return _hex((base / ref).read_text(encoding="utf-8").strip())
        for line in (common / "packed-refs").read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return _hex(sha)
    except (OSError, UnicodeDecodeError):
        return None
    return None


@functools.cache
def _code_release() -> tuple[str | None, str | None]:
    """(commit, bundle_created) of the code running, read once: the MANIFEST of the install it
    runs from, else the git checkout it runs from, else (None, None)."""
    here = Path(__file__).resolve()
    prefix = prefix_above(here)
    if prefix is None:
        return checkout_commit(here.parents[1]), None
    try:
        manifest = json.loads((prefix / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):  # a bundle from before MANIFEST.json, or one damaged
        return None, None
    if not isinstance(manifest, dict):
        return None, None
    commit, created = manifest.get("commit"), manifest.get("created")
    return (commit if isinstance(commit, str) else None), (created if isinstance(created, str) else None)


def current(model_sha256: str | None = None) -> dict:
    """This monitor's release as /status gives it (`release`): the package version, the source
    commit and when its bundle was made (each null where not known), and the model file's sha256."""
    commit, created = _code_release()
    return {"version": __version__, "commit": commit, "bundle_created": created, "model_sha256": model_sha256}


def summary(release: dict) -> str:
    """One line for `edge --version` and `edge doctor`."""
    known = []
    if release["commit"]:
        known.append(f"commit {release['commit']}")
    if release["bundle_created"]:
        known.append(f"bundle made {release['bundle_created']}")
    return f"queue-mood {release['version']}" + (
        f", {', '.join(known)}" if known else " (source commit unknown: not installed from a bundle that records it, "
                                              "nor run from a git checkout)")
