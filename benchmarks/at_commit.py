"""A benchmark script as an older commit had it, run on this machine (optionally with AVX2
kernels): figures an issue measured at that commit on another machine can then be set against
this one's, the same code on both, instead of guessing how much slower that machine is.

    python benchmarks/at_commit.py REV [--isa avx2] -- benchmarks/latency.py ARGS...

The commit's tracked files are extracted once (git archive) into .cache/at_commit/<sha>/ and
the script runs there, with that tree's `edge` and `benchmarks` packages in place of this
checkout's; the current venv's libraries are used. Files the old code downloads or expects
installed (a detector model the old default used) it asks for in its own words.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, isa
from edge.errors import UserError

CACHE = common.REPO / ".cache" / "at_commit"
OWN = ("edge", "benchmarks", "train", "convert")  # the project's packages: taken from the old tree


def resolve(rev: str, repo: Path = common.REPO) -> str:
    """The full commit id of `rev` in `repo`."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                             capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UserError(f"at_commit needs git ({exc}); install it or run the script from a checkout of {rev}.")
    if out.returncode != 0 or not out.stdout.strip():
        raise UserError(f"{rev} is not a commit of {repo}; give a commit id, tag or branch `git log` shows.")
    return out.stdout.strip()


def extract(sha: str, repo: Path = common.REPO, cache: Path = CACHE) -> Path:
    """The commit's tracked files in cache/<sha> (extracted on first use, whole or not at all)."""
    tree = cache / sha
    if tree.is_dir():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=cache))
    try:
        archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", sha],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True, capture_output=True)
        tmp.rename(tree)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not extract {sha[:12]} into {cache} ({exc}); check the disk and that git and tar run.")
    return tree


def run_in(tree: Path, script: str, args: list[str]) -> None:
    """Run tree/script as __main__ with the tree's own packages (not this checkout's)."""
    path = tree / script
    if not path.is_file():
        raise UserError(f"{script} is not in the tree of that commit ({tree}); give a path relative to the repository.")
    for name in list(sys.modules):
        if name.split(".")[0] in OWN:
            del sys.modules[name]
    here = {str(common.REPO), str(common.REPO / "benchmarks")}
    sys.path[:] = [str(tree)] + [p for p in sys.path if str(Path(p or ".").resolve()) not in here]
    os.chdir(tree)
    import edge  # noqa: F401 - checked below: an editable install must not win over the old tree

    if not Path(edge.__file__).resolve().is_relative_to(tree.resolve()):
        raise UserError(f"`edge` still imports from {edge.__file__}, not from {tree}; run from a plain checkout.")
    sys.argv = [script, *args]
    runpy.run_path(str(path), run_name="__main__")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s [-h] [--isa {native,avx2}] REV -- SCRIPT [ARGS ...]",
                                 epilog="e.g. python benchmarks/at_commit.py c047ebb^ -- benchmarks/latency.py --threads 1")
    ap.add_argument("rev", help="commit, tag or branch whose benchmark code to run")
    common.add_isa_arg(ap)
    if "--" not in argv:
        ap.parse_known_args(argv)  # --help is answered here
        raise UserError("give the script after --: python benchmarks/at_commit.py REV -- benchmarks/latency.py ARGS.")
    at = argv.index("--")
    args = ap.parse_args(argv[:at])
    rest = argv[at + 1:]
    if not rest:
        raise UserError("no script after --; e.g. -- benchmarks/latency.py --threads 1.")
    sha = resolve(args.rev)
    isa.apply(args.isa)  # re-starts the process with AVX-512 hidden, then masks LiteRT
    tree = extract(sha)
    kernels = "AVX2 kernels only (--isa avx2)" if args.isa == "avx2" else "native kernels"
    print(f"at_commit: {rest[0]} as commit {sha[:12]} had it, {kernels}; tree {tree}", flush=True)
    run_in(tree, rest[0], rest[1:])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
