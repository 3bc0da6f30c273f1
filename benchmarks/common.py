"""Shared by the benchmark scripts: machine info, a timing helper, and the JSON/markdown writers.

Every benchmark writes <out>/<name>.json (for scripts that compare runs) and <out>/<name>.md
(for people), both headed by the same machine block: CPU, cores, OS, Python, numpy, OpenCV,
the TFLite runtime, on a Raspberry Pi the board and the CPU governor (a WARNING when it is not
`performance`), the command line, the date and the sha256 of every model measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"  # the committed results: written only when --out names it


def default_out() -> Path:
    """A fresh run folder under ./runs/bench in the current directory (runs/ is ignored by git),
    so a run never overwrites the committed results by accident (`--out benchmarks/results`
    updates those on purpose). Not beside the code: installed, that is site-packages, which
    the user running `edge bench` on a Pi cannot write."""
    return Path.cwd() / "runs" / "bench" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


DEFAULT_MODEL_DIR = REPO / "edge" / "models" / "default"
PI_MODEL = Path("/proc/device-tree/model")
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


# ---------------------------------------------------------------------------- machine

def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def cpu_model() -> str:
    """'model name' from /proc/cpuinfo (x86), else 'Hardware'/'Model' (ARM), else platform."""
    text = _read(Path("/proc/cpuinfo")) or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k.lower(), v)
    for key in ("model name", "hardware", "model", "cpu part"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


# CPU features that decide int8 inference speed (~10x between them): x86 flags, then ARM's
# (asimddp = the dot-product instructions a Pi 5's Cortex-A76 has and a Pi 4's A72 lacks).
SIMD_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")


# One Raspberry Pi 4 core (Cortex-A72, 1.5 GHz, no int8 dot product), in GMAC/s: XNNPACK's
# README (github.com/google/XNNPACK, "Raspberry Pi" table, benchmarked 2020-02-12) gives
# MobileNet v1 1.0X (569 M MACs, Howard et al. 2017) at 75 ms on an RPi 4 with 4 threads:
# 7.6 GMAC/s for the board, 1.9 per core. That figure is fp32; without SDOT, XNNPACK's int8
# kernels on the A72 are assumed no faster. An estimate until `edge bench` runs on a Pi.
PI4_CORE_GMACS = 569e6 / 0.075 / 4 / 1e9


def cpu_features() -> list[str]:
    """The SIMD_FEATURES this CPU reports in /proc/cpuinfo ('flags' on x86, 'Features' on ARM)."""
    text = _read(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in SIMD_FEATURES if f in have]
    return []


def cores() -> dict:
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    return {"logical": logical, "usable": usable}


def all_cores() -> int:
    return cores()["usable"]


def os_name() -> str:
    text = _read(Path("/etc/os-release")) or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return f"{line.split('=', 1)[1].strip(chr(34))} ({platform.system()} {platform.release()})"
    return platform.platform()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    """Versions without importing TensorFlow (read from the installed distributions)."""
    out = {"numpy": np.__version__}
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        out["opencv"] = None
    try:
        from edge.pipeline.runtime import runtime

        out["tflite_runtime"] = runtime().describe()
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: accuracy of .keras needs none
        out["tflite_runtime"] = f"none ({exc})"
    for dist in ("tensorflow", "tensorflow-cpu", "keras"):
        v = _version(dist)
        if v:
            out[dist] = v
    return out


_AT_START: dict = {}  # what note_start() read before the run: the header's "at start" figures


def note_start() -> None:
    """Reads the load average and CPU temperature before the run. The header is made when the
    results are, after the run's own minutes of load: read then, a run on one core warned about
    "other work" that was its own, and missed any that was there at the start."""
    _AT_START["temp"] = _read(THERMAL)
    try:
        _AT_START["load1"] = os.getloadavg()[0]
    except OSError:
        _AT_START["load1"] = None


def machine_info() -> dict:
    """The machine block every result carries; `warnings` lists what makes numbers unreliable."""
    info = {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "machine": platform.machine(),
        "cores": cores(),
        "os": os_name(),
        "python": platform.python_version(),
        **library_versions(),
        "hostname": platform.node(),
    }
    from benchmarks import isa

    kernels = isa.describe()
    if kernels:
        info["kernels"] = kernels
    warnings = []
    board = _read(PI_MODEL)
    if board:
        info["board"] = board
    governor = _read(GOVERNOR)
    if governor:
        info["cpu_governor"] = governor
        if governor != "performance":
            warnings.append(f"WARNING: CPU governor is '{governor}', not 'performance'; timings vary with the clock. "
                            "Set it with: echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
    if not _AT_START:  # a script that did not call note_start: read now
        note_start()
    temp, load1 = _AT_START["temp"], _AT_START["load1"]
    if temp and temp.lstrip("-").isdigit():
        info["cpu_temp_c_at_start"] = round(int(temp) / 1000, 1)
    if load1 is not None:
        info["load_average_1min_at_start"] = round(load1, 2)
        if load1 > 0.5 * info["cores"]["usable"]:
            warnings.append(f"WARNING: load average {load1:.1f} on {info['cores']['usable']} cores at start; "
                            "other work is competing for the CPU.")
    info["warnings"] = warnings
    return info


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How this run was started: `edge bench NAME ...` or `python benchmarks/NAME.py ...`."""
    args = sys.argv[1:] if argv is None else list(argv)
    prefix = sys.argv[0] if sys.argv and sys.argv[0].startswith("edge bench") else f"python benchmarks/{script}.py"
    return " ".join([prefix, shlex.join(args)]).strip()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_info(path) -> dict:
    from edge.card import sha256_file

    p = Path(path)
    return {"path": str(p), "file": p.name, "size_bytes": p.stat().st_size, "sha256": sha256_file(p)}


def detector_file(detector) -> Path | None:
    """The model file a face detector runs (a tiled detector's inner one's): measured too, so in the header."""
    return getattr(getattr(detector, "inner", detector), "model_path", None)


def run_header(script: str, argv, models: Sequence | None = None) -> dict:
    """machine + command + date + model hashes: the first keys of every result file."""
    return {
        "benchmark": script,
        "date": now_iso(),
        "command": command_line(script, argv),
        "machine": machine_info(),
        "models": [model_info(m) for m in dict.fromkeys(str(m) for m in (models or [])) if Path(m).is_file()],
    }


# ---------------------------------------------------------------------------- timing

@dataclass
class Timing:
    repeats: int
    warmup: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(samples_ms: Sequence[float], warmup: int = 0) -> Timing:
    a = np.asarray(samples_ms, np.float64)
    if a.size == 0:
        raise ValueError("no timing samples")
    return Timing(int(a.size), int(warmup), float(np.median(a)), float(np.percentile(a, 90)),
                  float(np.percentile(a, 99)), float(a.mean()), float(a.min()), float(a.max()))


def seeded_inputs(make: Callable[[np.random.Generator], object], seed: int, n: int = 8) -> list:
    """n inputs drawn by `make` from one seeded generator (rotated through while timing)."""
    rng = np.random.default_rng(seed)
    return [make(rng) for _ in range(max(1, n))]


def time_calls(fn: Callable[[object], object], inputs: Sequence, repeats: int, warmup: int) -> Timing:
    """Run fn on the inputs in turn: `warmup` untimed calls, then `repeats` timed ones."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    samples = []
    clock = time.perf_counter
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        t = clock()
        fn(x)
        samples.append((clock() - t) * 1000.0)
    return summarize(samples, warmup)


def percentile_ms(samples_s: Sequence[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(samples_s, q)), 4) if len(samples_s) else None


def median_ms(samples_s: Sequence[float]) -> float | None:
    return round(1000 * float(np.median(samples_s)), 4) if len(samples_s) else None


# ---------------------------------------------------------------------------- writers

def out_dir(path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def replace_file(path: Path, write: Callable[[Path], object]) -> Path:
    """write(temp) beside `path`, then rename it over `path`: a run stopped while writing
    (Ctrl-C, a full disk) leaves the earlier file or the new one whole, never half of one."""
    tmp = path.with_name(f".{path.name}.part{path.suffix}")  # the suffix: matplotlib reads the format from it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, obj) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    return replace_file(path, lambda tmp: tmp.write_text(text))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[bool] | None = None) -> str:
    """A GitHub markdown table; `right` marks right-aligned (numeric) columns."""
    right = right or [i > 0 for i in range(len(headers))]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_header(title: str, report: dict) -> str:
    """Title, warnings, then the machine block and the command, as markdown."""
    m = report["machine"]
    lines = [f"# {title}", ""]
    for w in m.get("warnings", []):
        lines += [f"> **{w}**", ""]
    board = f" · board: {m['board']}" if m.get("board") else ""
    gov = f" · governor: {m['cpu_governor']}" if m.get("cpu_governor") else ""
    lines += [
        f"- machine: {m['cpu']} ({m['machine']}), {m['cores']['usable']} usable cores{board}{gov}",
        f"- CPU features for int8 inference: {', '.join(m.get('cpu_features') or ['none reported'])}"
        + (f" · **{m['kernels']}**" if m.get("kernels") else ""),
        f"- OS: {m['os']} · Python {m['python']} · numpy {m['numpy']} · OpenCV {m['opencv']} · "
        f"TFLite runtime: {m['tflite_runtime']}",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
    ]
    for mi in report.get("models", []):
        lines.append(f"- model {mi['path']}: {mi['size_bytes']:,} bytes, sha256 {mi['sha256'][:16]}…")
    return "\n".join(lines) + "\n"


def stem(name: str) -> str:
    """A benchmark's file name stem: NAME, or NAME_avx2 under --isa avx2, so that its results can
    sit beside the native ones (benchmarks/results has both) instead of replacing them."""
    from benchmarks import isa

    return name if isa.active() == "native" else f"{name}_{isa.active()}"


def write_results(out: Path, name: str, report: dict, markdown: str) -> tuple[Path, Path]:
    out = out_dir(out)
    j = write_json(out / f"{stem(name)}.json", report)
    m = replace_file(out / f"{stem(name)}.md", lambda tmp: tmp.write_text(markdown))
    return j, m


def pyplot():
    """matplotlib with the Agg backend (headless), or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt, fig, out: Path, name: str) -> Path:
    """Write a benchmark's figure as OUT/NAME.png and release it."""
    fig.tight_layout()
    p = replace_file(out / f"{stem(name)}.png", lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return p


def save_plot(plt, fig, ax, out: Path, name: str, **legend) -> Path:
    """A one-axes figure's ending: legend (with `legend` options), light grid, OUT/NAME.png."""
    ax.legend(**legend)
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, out, name)


def recall_plot(out: Path, name: str, widths: list, series: dict, xlabel: str, title: str,
                log_x: bool = False, guides: tuple = ()) -> Path | None:
    """Detector recall against face width, one line per {label: recall per width}; `guides`:
    recall levels drawn as dotted lines."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, recalls in series.items():
        ax.plot(widths, recalls, marker="o", label=label)
    for level in guides:
        ax.axhline(level, color="grey", linestyle=":", linewidth=1)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(widths)
    ax.set_xticklabels([str(w) for w in widths])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    return save_plot(plt, fig, ax, out, name, fontsize=7, loc="lower right")


def script_parser(doc: str, default_threads: int | None = None):
    """An argparse parser for a benchmark script: first paragraph of `doc` as description,
    all of it as epilog, and the common arguments."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, default_threads=default_threads)
    return ap


def number(kind: type = int, low: float = 1, above: bool = False):
    """An argparse type for a count or length: a finite `kind` of `low` or more (more than `low`
    when `above`), so that 0 repeats, -1 minutes or nan is argparse's one-line error naming the
    option before any work, not a numpy error (or a run that never ends) later."""
    what = ("a whole number" if kind is int else "a number") + (f" above {low:g}" if above else f" of {low:g} or more")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > low if above else value >= low)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def share(high: float = 1.0, below: bool = False):
    """An argparse type for a share (of frames, of faces): a number from 0 to `high` (under it when
    `below`), so a rate of 2 or nan is a one-line error, not a run that reports nothing as a result."""
    what = f"a share from 0 to {'below ' if below else ''}{high:g}"

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 <= value and (value < high if below else value <= high)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def numbers(kind: type = int, low: float = 1, above: bool = False):
    """number()'s type for a comma list, e.g. --faces 1,4."""
    one = number(kind, low, above)
    return lambda text: [one(v.strip()) for v in text.split(",") if v.strip()]


def slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return keep.strip("_")[:80] or "model"


def add_isa_arg(ap) -> None:
    from benchmarks import isa

    ap.add_argument("--isa", choices=isa.CHOICES, default="native",
                    help="kernels to use: native (all this CPU has) or avx2 (AVX-512 hidden from every library, to "
                         "measure as an AVX2-only machine would; re-starts the process; default: %(default)s)")


def add_common_args(ap, default_repeats: int | None = None, default_warmup: int | None = None,
                    default_threads: int | None = None) -> None:
    ap.add_argument("--out", default=str(default_out()),
                    help="folder for the JSON, markdown and PNG files (default: a new folder runs/bench/<UTC time> in the "
                         "current directory; "
                         "--out benchmarks/results replaces the committed results)")
    ap.add_argument("--seed", type=int, default=0, help="seed for inputs and sampling (default: %(default)s)")
    add_isa_arg(ap)
    if default_threads is not None:
        ap.add_argument("--threads", type=number(), default=default_threads,
                        help="interpreter (and OpenCV) threads (default: %(default)s)")
    if default_repeats is not None:
        ap.add_argument("--repeats", type=number(), default=default_repeats, help="timed runs per case (default: %(default)s)")
    if default_warmup is not None:
        ap.add_argument("--warmup", type=number(low=0), default=default_warmup,
                        help="untimed runs before timing (default: %(default)s)")


# The float models `edge convert` writes beside the int8 one: same Keras source, so they may
# borrow its card (labels, input size, crop rule; a float model ignores the quantization fields).
FLOAT_TWINS = ("model_float32.tflite", "model_float16.tflite")


def default_models() -> list[str]:
    """The shipped default model and, where the run folder keeps them, its float and Keras twins."""
    from edge.card import INT8_MODEL

    out = []
    for p in (DEFAULT_MODEL_DIR / INT8_MODEL, DEFAULT_MODEL_DIR / "model_float32.tflite",
              REPO / "runs" / "default" / "model_float32.tflite", REPO / "runs" / "default" / "model.keras"):
        if p.is_file() and p.name not in {Path(o).name for o in out}:
            out.append(str(p))
    return out


def expand_models(items: Sequence[str]) -> list[Path]:
    """Model paths; a folder stands for the models in it (int8, float32, float16 .tflite, model.keras)."""
    from edge.card import INT8_MODEL, refuse_failed_conversion
    from edge.errors import UserError

    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = [p / n for n in (INT8_MODEL, *FLOAT_TWINS, "model.keras") if (p / n).is_file()]
            if not found:
                refuse_failed_conversion(p, "Model folder")
                raise UserError(f"{p} holds no model_int8.tflite, model_float32.tflite or model.keras.")
            out += found
        elif p.is_file() and p.suffix in (".tflite", ".keras"):
            out.append(p)
        elif not p.exists():
            raise UserError(f"Model {p} does not exist; pass .tflite or .keras models, or folders of them.")
        else:
            raise UserError(f"{p} is not a .tflite or .keras model (or a folder of them).")
    return out


def classifier_model(given: str | None) -> Path:
    """The .tflite a --model names, as `edge run` reads it: a file, or the folder `edge convert
    --out` wrote; the shipped model when none is given."""
    from edge.config import model_file
    from edge.models import default_model_path

    return model_file(given) if given else default_model_path()


def model_label(path: Path) -> str:
    """A short label: parent folder + file name."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def refuse_skipped_models(reasons: dict[str, str]) -> None:
    """Models asked for by name that could not be measured (label -> why): an error, since a
    report without them, and status 0, would pass for a full one."""
    from edge.errors import UserError

    if reasons:
        raise UserError("; ".join(f"{m}: {r}" for m, r in reasons.items()) +
                        " (nothing was written; fix or leave out that model)")


def find_card_for(path: Path, others: Sequence[Path] = ()):
    """The model card beside a .tflite; a float model without one borrows a sibling's card.
    Returns (card, where) or (None, reason: a sentence that says what to do)."""
    from edge.card import CARD_NAME, load_card, sha256_file

    card_path = path.parent / CARD_NAME
    if card_path.is_file():
        card = load_card(path)
        # Another model put in the card's model's place (or beside it) would be reported with that
        # model's temperature, parameters and MACs: the card's sha256 tells the two apart.
        if card.model_sha256 and path.name not in FLOAT_TWINS and sha256_file(path) != card.model_sha256:
            return None, (f"{card_path} was written for other model bytes than {path} (sha256 differs), so its "
                          "figures are another model's; convert this model with `edge convert`, which writes its "
                          "own card")
        return card, str(card_path)
    advice = "a .tflite needs the model.json card `edge convert` writes beside it"
    if "int8" in path.name:
        return None, f"no {CARD_NAME} beside {path}; {advice}"
    for o in others:
        c = Path(o).parent / CARD_NAME
        if Path(o).suffix == ".tflite" and c.is_file():
            return load_card(o), str(c)
    return None, f"no {CARD_NAME} beside {path} or any other model given; {advice}"


def script_main(name: str, parser, run, figure, to_markdown, argv=None) -> int:
    """main() of a benchmark script that draws one figure: parse, then finish()."""
    return finish(name, parser.parse_args(argv), argv, run, lambda r, o: [figure(r, o)], to_markdown)


def finish(name: str, args, argv, run, draw, to_markdown) -> int:
    """The end every benchmark script shares: measure, draw, write JSON + markdown, print.
    `draw(report, out)` returns the PNG paths it wrote; a UserError is one line and exit 2."""
    from benchmarks import isa
    from edge.errors import UserError
    from edge.paths import check_out_folder

    stage = None
    try:
        try:
            check_out_folder(args.out)  # before a run of many minutes, not an OSError after it
            if getattr(args, "data", None):  # every benchmark's --data is a FER2013 dataset that edge train and eval read
                from train.data import check_out_outside_data

                check_out_outside_data(args.out, args.data)
            isa.apply(getattr(args, "isa", "native"))
            note_start()
            report = run(args, argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            out = out_dir(args.out)
            before = {p.name for p in out.iterdir()}
            # The figures are drawn aside and moved in after the JSON and markdown: a stop while
            # drawing leaves the earlier run's files, not new figures beside its numbers.
            # The JSON and markdown are written there too and all moved in together: a stop while
            # writing the markdown must not leave this run's JSON beside the earlier run's table.
            stage = Path(tempfile.mkdtemp(prefix=".figures-", dir=out))
            staged = [p for p in draw(report, stage) if p]
            report["png"] = [p.name for p in staged]
            md = to_markdown(report)
            if staged:
                md += f"\nFigures: {', '.join(report['png'])}\n"
            earlier = [p for p in (f"{stem(name)}.json", f"{stem(name)}.md", *report["png"]) if p in before]
            j, m, *pngs = [out / p.name for p in (*write_results(stage, name, report, md), *staged)]
            for p in (j, m, *pngs):
                os.replace(stage / p.name, p)
        except OSError as exc:  # e.g. the disk filled during the run
            print(f"error: Cannot write the results to {args.out} ({exc.strerror}); pass --out with a folder you can "
                  "write to.", file=sys.stderr)
            return 2
    except KeyboardInterrupt:  # the files are written at the end only, each whole or not at all
        print(f"error: Stopped by Ctrl-C before the results were written; nothing new is in {args.out}.",
              file=sys.stderr)
        return 130
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    print(md)
    print(f"wrote {j}, {m}" + (f" and {', '.join(p.name for p in pngs)} in {out}" if pngs else ""))
    if earlier:
        print(f"note: {out} held an earlier run's {', '.join(earlier)}; this run's files replaced those of the same "
              "name.")
    return 0
