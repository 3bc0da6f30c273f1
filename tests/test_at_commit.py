"""benchmarks/at_commit.py: an older commit's benchmark script runs with that commit's packages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import at_commit
from edge.errors import UserError

REPO = Path(__file__).resolve().parent.parent

needs_git = pytest.mark.skipif(shutil.which("git") is None or shutil.which("tar") is None, reason="needs git and tar")

PROBE = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import edge
json.dump({"edge": edge.__file__, "marker": edge.MARKER, "argv": sys.argv, "cwd": os.getcwd()},
          open(sys.argv[1], "w"))
"""


def old_repo(root: Path) -> str:
    """A git repository with its own `edge` package and a probe script; its commit id."""
    (root / "edge").mkdir(parents=True)
    (root / "edge" / "__init__.py").write_text('MARKER = "old tree"\n')
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "probe.py").write_text(PROBE)

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "old")
    return git("rev-parse", "HEAD").strip()


@needs_git
def test_the_script_runs_with_the_commits_own_packages(tmp_path):
    sha = old_repo(tmp_path / "repo")
    assert at_commit.resolve("HEAD", tmp_path / "repo") == sha
    tree = at_commit.extract(sha, tmp_path / "repo", tmp_path / "cache")
    assert tree == tmp_path / "cache" / sha and (tree / "benchmarks" / "probe.py").is_file()
    assert at_commit.extract(sha, tmp_path / "repo", tmp_path / "cache") == tree  # extracted once
    out = tmp_path / "probe.json"
    # in a child: run_in swaps this process's packages; `edge` is imported first, as at_commit's own imports do
    code = (f"import edge; from benchmarks import at_commit; from pathlib import Path; "
            f"at_commit.run_in(Path({str(tree)!r}), 'benchmarks/probe.py', [{str(out)!r}])")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
    seen = json.loads(out.read_text())
    assert seen["marker"] == "old tree"
    assert Path(seen["edge"]).resolve().is_relative_to(tree.resolve())
    assert seen["argv"][0].endswith("benchmarks/probe.py") and seen["argv"][1:] == [str(out)]
    assert Path(seen["cwd"]).resolve() == tree.resolve()


@needs_git
def test_an_unknown_revision_is_one_sentence(tmp_path):
    old_repo(tmp_path / "repo")
    with pytest.raises(UserError, match="is not a commit of"):
        at_commit.resolve("no-such-branch", tmp_path / "repo")


def test_a_script_the_commit_lacks_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="is not in the tree of that commit"):
        at_commit.run_in(tmp_path, "benchmarks/nothing.py", [])


def test_the_script_goes_after_a_double_dash():
    with pytest.raises(UserError, match="after --"):
        at_commit.main(["HEAD", "benchmarks/latency.py"])
    with pytest.raises(UserError, match="no script after --"):
        at_commit.main(["HEAD", "--"])


def test_the_command_line_reports_errors_in_one_line():
    r = subprocess.run([sys.executable, "benchmarks/at_commit.py", "no-such-branch", "--", "benchmarks/latency.py"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")


@pytest.mark.parametrize("script, needle", [("at_commit.py", "REV -- SCRIPT"), ("memtrace.py", "OUT -- EDGE-ARGS")])
def test_the_scripts_that_wrap_another_answer_help_instead_of_asking_for_dashes(script, needle):
    r = subprocess.run([sys.executable, str(Path(at_commit.__file__).with_name(script)), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and needle in r.stdout and "after --" not in r.stderr, r.stderr
