"""Run the `edge` command with its memory accounted for, so a soak can say where RSS growth is.

RSS alone cannot tell a Python leak from native growth (TFLite, OpenCV, paho's buffers) or from
glibc keeping freed memory in its per-thread arenas. Every --every-s this appends one JSON line
to OUT: RSS, the Python heap as tracemalloc counts it (every allocation Python makes, small
objects and large), what malloc has handed out and what it holds from the system (mallinfo2,
all arenas), tracemalloc's own bookkeeping (which RSS includes) and the number of objects the
garbage collector tracks. After --warmup-s it takes a tracemalloc snapshot, and every
--top-every-s after that, and at exit, it rewrites OUT's sibling `<OUT stem>-top.json` with the
call stacks whose live allocations grew most since then.

    python benchmarks/memtrace.py OUT.jsonl [--every-s 60] [--warmup-s 180] [--top-every-s 1800] -- run ...
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import json
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

MIB = 1024 * 1024
TOP = 15  # source lines kept in the growth table
FRAMES = 6  # frames kept per allocation: enough to see who called into a library


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_mb() -> dict:
    """In use (handed out by malloc) and held (taken from the system), in MiB; {} off glibc."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return {}
    fn.restype = _MallInfo2
    m = fn()
    return {"malloc_in_use_mb": round((m.uordblks + m.hblkhd) / MIB, 2),
            "malloc_held_mb": round((m.arena + m.hblkhd) / MIB, 2)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 2)
    return float("nan")


def sample(t0: float) -> dict:
    current, _peak = tracemalloc.get_traced_memory()
    return {"t_s": round(time.monotonic() - t0, 1), "rss_mb": rss_mb(), "python_heap_mb": round(current / MIB, 2),
            "tracemalloc_own_mb": round(tracemalloc.get_tracemalloc_memory() / MIB, 2), **malloc_mb(),
            "gc_objects": len(gc.get_objects())}


def short(filename: str) -> str:
    """A file name without the longest sys.path folder it is under (the stdlib's, site-packages')."""
    roots = sorted((p for p in sys.path if p and filename.startswith(p.rstrip("/") + "/")), key=len)
    return filename[len(roots[-1].rstrip("/")) + 1:] if roots else filename


def growth(base: tracemalloc.Snapshot, now: tracemalloc.Snapshot) -> list[dict]:
    """The allocation sites (call stacks) that hold most more memory now than at `base`."""
    grown = [d for d in now.compare_to(base, "traceback") if d.size_diff > 0][:TOP]
    return [{"size_diff_kb": round(d.size_diff / 1024, 1), "count_diff": d.count_diff,
             "size_kb": round(d.size / 1024, 1), "where": [f"{short(f.filename)}:{f.lineno}" for f in d.traceback]}  # outermost first
            for d in grown]


_top_lock = threading.Lock()  # the watcher and the exit handler may both write the table


def write_top(top: Path, base: tuple[float, tracemalloc.Snapshot], t0: float) -> None:
    with _top_lock:
        rows = growth(base[1], tracemalloc.take_snapshot())
        tmp = top.with_suffix(".tmp")
        tmp.write_text(json.dumps({"since_s": base[0], "at_s": round(time.monotonic() - t0, 1), "top": rows},
                                  indent=1))
        tmp.replace(top)


def watch(out: Path, every_s: float, warmup_s: float, top_every_s: float, t0: float, base: list) -> None:
    """`base` gets the warm-up snapshot (a list, so the exit handler sees it). Snapshots are
    taken rarely: each is a copy of every trace, and its memory is part of RSS too."""
    top = out.with_name(out.stem + "-top.json")
    next_top = warmup_s + top_every_s
    while True:
        time.sleep(every_s)
        s = sample(t0)
        with out.open("a") as f:
            f.write(json.dumps(s) + "\n")
        if not base and s["t_s"] >= warmup_s:
            base.append((s["t_s"], tracemalloc.take_snapshot()))
        elif base and s["t_s"] >= next_top:
            write_top(top, base[0], t0)
            next_top += top_every_s


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s [-h] [--every-s S] [--warmup-s S] [--top-every-s S] OUT -- EDGE-ARGS ...",
                                 epilog="e.g. python benchmarks/memtrace.py mem.jsonl -- run --config soak.toml")
    ap.add_argument("out", type=Path, help="JSON-lines file for the samples (its growth table beside it: OUT-top.json)")
    ap.add_argument("--every-s", type=float, default=60.0, metavar="S", help="seconds between samples (default: %(default)s)")
    ap.add_argument("--warmup-s", type=float, default=180.0, metavar="S",
                    help="seconds before the baseline snapshot (default: %(default)s)")
    ap.add_argument("--top-every-s", type=float, default=1800.0, metavar="S",
                    help="seconds between growth tables (default: %(default)s)")
    if "--" not in argv:
        ap.parse_known_args(argv)  # --help is answered here
        sys.exit("memtrace: put the edge command's arguments after --, e.g. memtrace.py out.jsonl -- run ...")
    cut = argv.index("--")
    args = ap.parse_args(argv[:cut])
    try:  # before the edge command starts: a folder or an unwritable path is one line
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("")
    except OSError as exc:
        sys.exit(f"memtrace: cannot write {args.out} ({exc.strerror or exc}); give a file path for the samples.")
    tracemalloc.start(FRAMES)
    t0 = time.monotonic()
    base: list = []
    threading.Thread(target=watch, args=(args.out, args.every_s, args.warmup_s, args.top_every_s, t0, base),
                     daemon=True, name="memtrace").start()
    # The last growth table at exit (SIGTERM ends the edge command normally).
    atexit.register(lambda: base and write_top(args.out.with_name(args.out.stem + "-top.json"), base[0], t0))
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # benchmarks/ must not shadow anything the edge command imports
    sys.argv = ["edge", *argv[cut + 1:]]
    runpy.run_module("edge.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
