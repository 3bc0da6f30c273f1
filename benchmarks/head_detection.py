"""Face detectors on whole heads with context at queue distances: recall, false positives
per frame and milliseconds per frame, for each detector set-up and face width.

Scenes come from benchmarks/heads.py: 640x480 frames, several heads of one face width
(24-128 px, the width of the face box) inside the central 75% of the frame (the queue), on a
cluttered background, each frame under one camera condition (clean, dim, bright, side
light, blur, JPEG, sensor noise, rotation up to 15 degrees). A face counts as found when a
detection overlaps its box by IoU >= 0.3 (one detection per face); every other detection is
a false positive.

A set-up is written MODEL[@SCORE][+roi][+tCxR][+whole][+hires]:
  MODEL   default (the detector `edge run` builds from the default config) |
          full_range | short_range | full_range_sparse | haar
  @SCORE  the detector's min_score (default 0.5)
  roi     the detector sees only the queue region ([source] roi)
  tCxR    the region split into C x R overlapping tiles ([detector] tiles = [C, R])
  whole   one more call on the whole region, for faces bigger than the tile overlap
  hires   the scene is captured at 1280x960 (faces twice as wide in pixels; what the Pi
          camera's main stream gives at 1280x960), the detector windows are the same
Times are per detect() call on a frame (median, 10th percentile and minimum: the low ones
show the cost when other work shares the CPU), one thread for the interpreter and OpenCV;
the ratio of minimums to the plain full_range is measured in the same run.

    python benchmarks/head_detection.py --data /work/data/fer2013
    edge bench head_detection --frames 20
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common, heads  # noqa: E402

NAME = "head_detection"
WIDTHS = (24, 32, 40, 48, 64, 96, 128)
MATCH_IOU = 0.3
# the old default, ROI and tiles on each model, the config's default, and capture at 1280x960
DEFAULT_SETUPS = ("full_range,short_range,full_range+roi,full_range+t3x2+whole,full_range@0.4+t3x2+whole,"
                  "short_range@0.65+t3x2+whole,default,short_range@0.65+roi+t3x2+whole,default+hires")
MODELS = {  # at MediaPipe's own score threshold, 0.5, unless a set-up names another
    "full_range": ("blazeface", {"variant": "full_range", "min_score": 0.5}),
    "short_range": ("blazeface", {"variant": "short_range", "min_score": 0.5}),
    "full_range_sparse": ("blazeface", {"variant": "full_range", "min_score": 0.5,
                                        "model": "face_detection_full_range_sparse.tflite"}),
    "haar": ("haar", {}),
}


def default_data() -> Path:
    for p in (REPO / "data" / "fer2013", REPO.parent / "data" / "fer2013"):
        if p.is_dir():
            return p
    return REPO / "data" / "fer2013"


def parse_setup(spec: str) -> dict:
    """'full_range+roi+t2x2+whole+hires' -> its parts; a UserError names a bad part."""
    from edge.errors import UserError

    model, *flags = spec.split("+")
    model, _, score = model.partition("@")
    if model not in (*MODELS, "default"):
        raise UserError(f"Set-up '{spec}' starts with '{model}'; choose default or one of: {', '.join(MODELS)}.")
    try:
        min_score = float(score) if score else None
    except ValueError:
        raise UserError(f"Set-up '{spec}': '@{score}' is not a score threshold (e.g. full_range@0.6).") from None
    out = {"name": spec, "model": model, "min_score": min_score, "roi": False, "tiles": (1, 1), "whole": False,
           "hires": False}
    for f in flags:
        if f in ("roi", "whole", "hires"):
            out[f] = True
        elif f.startswith("t") and "x" in f and all(p.isdigit() for p in f[1:].split("x", 1)):
            out["tiles"] = tuple(int(p) for p in f[1:].split("x", 1))
        else:
            raise UserError(f"Set-up '{spec}' has the unknown part '{f}'; use roi, tCxR (e.g. t2x2), whole or hires.")
    if model == "default" and (min_score is not None or out["roi"] or out["tiles"] != (1, 1) or out["whole"]):
        raise UserError(f"Set-up '{spec}': 'default' takes its score, ROI and tiles from the config; only +hires may follow.")
    return out


def build_detector(setup: dict, threads: int, min_face_px: int, overlap: float):
    from edge.config import load_config
    from edge.pipeline.detectors import create_detector
    from edge.pipeline.detectors.blazeface import find_model
    from edge.pipeline.detectors.regions import configured_detector, with_regions

    if setup["model"] == "default":  # what `edge run` builds from the default config
        cfg = load_config(None, {"model.threads": threads})
        return configured_detector(cfg)
    kind, options = MODELS[setup["model"]]
    options = dict(options)
    if setup["min_score"] is not None:
        options["min_score"] = setup["min_score"]
    if options.get("model") and not Path(options["model"]).is_file():
        found = find_model(options["model"])
        if found is None:
            return None
        options["model"] = str(found)
    inner = create_detector(kind, threads=threads, min_face_px=min_face_px, **options)
    roi = heads.QUEUE_REGION if setup["roi"] else ()
    return with_regions(inner, roi, setup["tiles"], overlap, setup["whole"])


def match(boxes, detections) -> tuple[dict[int, int], int]:
    """Greedy one-to-one matching by IoU >= MATCH_IOU: ({face index: detection index}, false positives)."""
    from edge.pipeline.geometry import BBox

    pairs = sorted(((BBox(*b).iou(d.box), i, j) for i, b in enumerate(boxes) for j, d in enumerate(detections)),
                   reverse=True)
    found, used = {}, set()
    for iou, i, j in pairs:
        if iou < MATCH_IOU:
            break
        if i not in found and j not in used:
            found[i] = j
            used.add(j)
    return found, len(detections) - len(used)


def box_fit(pairs) -> dict | None:
    """How detection boxes frame the faces (medians over found faces): width ratio and the
    centre's offset in face widths. The face box is BlazeFace full range's framing, the one
    the model card's crop rule for "blazeface" was measured with."""
    if not pairs:
        return None
    a = np.array([(d.w / g[2], (d.center[0] - g[0] - g[2] / 2) / g[2], (d.center[1] - g[1] - g[3] / 2) / g[3])
                  for g, d in pairs])
    med = np.median(a, axis=0)
    return {"n": len(pairs), "scale": round(float(med[0]), 4), "shift_x": round(float(med[1]), 4),
            "shift_y": round(float(med[2]), 4)}


def make_scenes(args) -> tuple[list, list[dict]]:
    """The head list and the scene plans (seeded): per frame its width, condition, head picks."""
    rng = np.random.default_rng(args.seed)
    hs = [heads.astronaut_head()] + heads.lfw_heads() + heads.fer_heads(Path(args.data), args.fer, args.seed)
    plans = []
    for w in args.widths:
        for i in range(args.frames):
            picks = [int(k) for k in rng.choice(len(hs), size=args.per_frame, replace=False)]
            plans.append({"width": w, "condition": heads.CONDITIONS[i % len(heads.CONDITIONS)], "picks": picks,
                          "seed": int(rng.integers(1 << 31))})
    return hs, plans


def render(hs, plans, scale: float):
    return [heads.make_scene(hs, p["picks"], p["width"], p["condition"], p["seed"], scale) for p in plans]


def evaluate(det, scenes, plans, hs, warmup: int, classifier=None, majority: dict | None = None) -> dict:
    """Recall, false positives, time and box framing of one detector set-up; with a
    classifier, also the expression accuracy on the FER2013 heads it found, per width, against
    FER2013's label and (majority: head index -> class) the FER+ annotators' majority."""
    from edge.pipeline.preprocess import crop_face, to_gray

    for frame, _ in scenes[:warmup]:
        det.detect(frame)
    per_width, per_cond, per_source = {}, {}, {}
    ms, fp_total, pairs, crops = [], 0, [], []  # crops: (width, head index, crop) of found FER heads
    clock = time.perf_counter
    rule = classifier.card.crop_for(det.key) if classifier else None
    for (frame, placed), plan in zip(scenes, plans):
        t = clock()
        dets = det.detect(frame)
        ms.append((clock() - t) * 1000)
        found, fp = match([p.box for p in placed], dets)
        fp_total += fp
        pairs += [(placed[i].box, dets[j].box) for i, j in found.items()]
        if classifier:
            gray = to_gray(frame)
            crops += [(plan["width"], placed[i].head,
                       crop_face(gray, dets[j].box.as_tuple(), rule, classifier.card.input_size))
                      for i, j in found.items() if hs[placed[i].head].label]
        for i, p in enumerate(placed):
            hit = int(i in found)
            for table, key in ((per_width, plan["width"]), (per_cond, plan["condition"]), (per_source, hs[p.head].source)):
                table.setdefault(key, [0, 0])
                table[key][0] += hit
                table[key][1] += 1
    rate = lambda t: {str(k): round(f / n, 4) if n else None for k, (f, n) in sorted(t.items())}  # noqa: E731
    out = {
        "recall_by_width": rate(per_width),
        "faces_by_width": {str(k): n for k, (_, n) in sorted(per_width.items())},
        "recall_by_condition": rate(per_cond),
        "recall_by_source": rate(per_source),
        "false_positives": fp_total,
        "false_positives_per_frame": round(fp_total / max(1, len(scenes)), 4),
        "ms_median": round(float(np.median(ms)), 3),
        "ms_p90": round(float(np.percentile(ms, 90)), 3),
        "ms_p10": round(float(np.percentile(ms, 10)), 3),
        "ms_min": round(float(np.min(ms)), 3),
        "box_fit": box_fit(pairs),
    }
    if crops:
        pred = classifier.predict_many(np.stack([c for _, _, c in crops])).argmax(1)
        truths = {"fer_accuracy_of_found_by_width": {i: hs[i].label for _, i, _ in crops}}
        if majority is not None:
            truths["ferplus_accuracy_of_found_by_width"] = majority
        for key, truth in truths.items():
            right = {}
            for (w, i, _), k in zip(crops, pred):
                if truth.get(i) is not None:
                    right.setdefault(w, [0, 0])
                    right[w][0] += int(classifier.labels[k] == truth[i])
                    right[w][1] += 1
            out[key] = rate(right)
    return out


def ferplus_majority(hs, data: Path, votes_arg) -> tuple[dict | None, str]:
    """Head index -> the FER+ majority class of its face (heads with a tied or doubtful vote
    left out), and a line saying so; (None, why) without the votes file."""
    from edge.errors import UserError
    from edge.labels import LABELS
    from train.votes import find_votes, majority_labels, read_votes

    try:
        votes = read_votes(find_votes(data, votes_arg))
    except UserError as exc:
        if votes_arg:
            raise
        return None, f"FER2013's labels only ({exc})"
    fer = [i for i, h in enumerate(hs) if h.name]
    labels = majority_labels([hs[i].name for i in fer], votes)
    majority = {i: LABELS[k] for i, k in zip(fer, labels) if k >= 0}
    return majority, (f"FER+ majority of {votes.source} for {len(majority)} of the {len(fer)} FER2013 faces "
                      f"({len(fer) - len(majority)} with a tied or doubtful vote left out)")


def run(args, argv) -> dict:
    from edge.errors import UserError

    setups = [parse_setup(s) for s in args.setups.split(",")]
    model = common.classifier_model(args.model)  # before the scenes take their seconds to render
    if not Path(args.data).is_dir():
        raise UserError(f"FER2013 folder {args.data} does not exist; pass --data to the extracted folder (val/<class>/).")
    t0 = time.perf_counter()
    hs, plans = make_scenes(args)
    scenes = {1.0: render(hs, plans, 1.0)}
    if any(s["hires"] for s in setups):
        scenes[2.0] = render(hs, plans, 2.0)
    faces = sum(len(p) for _, p in scenes[1.0])
    print(f"{faces} heads in {len(plans)} frames ({time.perf_counter() - t0:.1f} s to render)")
    import cv2

    from edge.pipeline.classifier import Classifier

    cv2.setNumThreads(args.threads)
    classifier = Classifier(model, num_threads=args.threads)
    majority, truth = ferplus_majority(hs, Path(args.data), args.votes)
    results, detector_files = {}, []
    for s in setups:
        det = build_detector(s, args.threads, args.min_face_px, args.overlap)
        if det is None:
            print(f"{s['name']:36s} skipped: its model file is not installed")
            continue
        detector_files.append(common.detector_file(det))
        r = evaluate(det, scenes[2.0 if s["hires"] else 1.0], plans, hs, args.warmup, classifier, majority)
        r["detector"] = det.describe()
        r["calls_per_frame"] = len(det.windows_for(*((1280, 960) if s["hires"] else (640, 480)))) if hasattr(det, "windows_for") else 1
        results[s["name"]] = r
        print(f"{s['name']:36s} " + " ".join(f"{w}:{v:.2f}" for w, v in r["recall_by_width"].items())
              + f"  fp/frame {r['false_positives_per_frame']:.3f}  {r['ms_median']:.2f} ms")
    report = common.run_header(NAME, argv, [classifier.path, *filter(None, detector_files)])
    base = results.get("full_range", {}).get("ms_median")
    for r in results.values():
        r["ms_ratio_to_full_range"] = round(r["ms_median"] / base, 2) if base else None
        best = results.get("full_range", {}).get("ms_min")
        r["ms_min_ratio_to_full_range"] = round(r["ms_min"] / best, 2) if best else None
    report.update({
        "data": str(args.data), "frames": len(plans), "faces": faces, "frame_size": [heads.W, heads.H],
        "widths": list(args.widths), "conditions": list(heads.CONDITIONS), "queue_region": list(heads.QUEUE_REGION),
        "heads": {"astronaut": 1, "lfw": 100, "fer": args.fer}, "per_frame": args.per_frame, "seed": args.seed,
        "threads": args.threads, "tile_overlap": args.overlap, "min_face_px": args.min_face_px,
        "match_rule": f"IoU(detection, face box) >= {MATCH_IOU}, one detection per face", "expression_truth": truth,
        "setups": results, "classifier": str(classifier.path),
    })
    return report


def markdown(report: dict) -> str:
    widths = report["widths"]
    lines = [common.md_header(f"Face detection on whole heads ({report['faces']} heads, {report['frames']} frames "
                              f"{report['frame_size'][0]}x{report['frame_size'][1]})", report), ""]
    lines += [f"Heads: astronaut, {report['heads']['lfw']} lfw_subset faces and {report['heads']['fer']} FER2013 val faces "
              "blended into the astronaut's head (benchmarks/heads.py); up to "
              f"{report['per_frame']} per frame, faces inside the queue region {report['queue_region']}; conditions "
              f"{', '.join(report['conditions'])}, one per frame. Found: {report['match_rule']}. "
              f"Time: detect() per frame (median, 10th percentile, minimum), {report['threads']} thread(s); "
              f"tile overlap {report['tile_overlap']}.", ""]
    rows = []
    for name, r in report["setups"].items():
        rows.append([name, *[common.fmt(r["recall_by_width"].get(str(w))) for w in widths],
                     f"{r['false_positives_per_frame']:.3f}", r["calls_per_frame"], f"{r['ms_median']:.2f}",
                     f"{r['ms_p10']:.2f}", f"{r['ms_min']:.2f}", common.fmt(r["ms_min_ratio_to_full_range"])])
    lines.append(common.md_table(["set-up", *[f"{w} px" for w in widths], "FP/frame", "calls", "ms median", "ms p10",
                                  "ms min", "min x full_range"], rows))
    conds = report["conditions"]
    lines += ["", "Recall by condition (all widths) and by head source:", ""]
    sources = sorted({k for r in report["setups"].values() for k in r["recall_by_source"]})
    rows = [[name, *[common.fmt(r["recall_by_condition"].get(c)) for c in conds],
             *[common.fmt(r["recall_by_source"].get(s)) for s in sources]] for name, r in report["setups"].items()]
    lines.append(common.md_table(["set-up", *conds, *sources], rows))
    # the model --model named (the header hashes it), not "the shipped" one whatever was measured
    classifier = f"the classifier {common.model_label(Path(report['classifier']))}" if report.get("classifier") \
        else "the shipped classifier"
    for key, truth in (("ferplus_accuracy_of_found_by_width", "the FER+ majority of ten annotators"),
                       ("fer_accuracy_of_found_by_width", "FER2013's single label")):
        if not any(key in r for r in report["setups"].values()):
            continue
        lines += ["", f"Expression accuracy against {truth} on the FER2013 heads each set-up found (crop by the card's "
                  f"rule for the detector, {classifier}; blending a FER face into a head costs accuracy even "
                  "at large widths, so compare widths, not these figures with FER2013's own val accuracy):", ""]
        rows = [[name, *[common.fmt(r.get(key, {}).get(str(w))) for w in widths]] for name, r in report["setups"].items()]
        lines.append(common.md_table(["set-up", *[f"{w} px" for w in widths]], rows))
    if report.get("expression_truth"):
        lines += ["", f"Expression truth: {report['expression_truth']}."]
    rows = [[name, b["n"], f"{b['scale']:.3f}", f"{b['shift_x']:+.3f}", f"{b['shift_y']:+.3f}"]
            for name, r in report["setups"].items() if (b := r.get("box_fit"))]
    if not rows:  # a table of headers alone reads as a broken run
        lines += ["", "How the boxes frame the faces: no set-up found a face, so there is no framing to show."]
        return "\n".join(lines) + "\n"
    lines += ["", "How the boxes frame the faces (medians over found faces; the face box is BlazeFace full range's "
              "framing at full resolution, the one the card's `blazeface` crop rule was measured with): box width / "
              "face width, and the box centre's offset in face widths:", ""]
    lines.append(common.md_table(["set-up", "faces", "scale", "shift x", "shift y"], rows))
    return "\n".join(lines) + "\n"


def figure(report: dict, out: Path):
    widths = report["widths"]
    series = {f"{name} ({r['calls_per_frame']} calls, min {r['ms_min']:.1f} ms)":
              [r["recall_by_width"].get(str(w)) for w in widths] for name, r in report["setups"].items()}
    return common.recall_plot(out, NAME, widths, series, "face width in a 640x480 frame (px)",
                              "Face detection on whole heads: recall vs face width", log_x=True, guides=(0.95, 0.85))


def build_parser():
    from edge.config import DetectorConfig

    ap = common.script_parser(__doc__, default_threads=1)
    ap.add_argument("--data", default=str(default_data()), help="extracted FER2013 folder with val/<class>/ (default: %(default)s)")
    ap.add_argument("--model", default=None, help="expression model (int8 .tflite with model.json, or the folder "
                                                  "`edge convert --out` wrote) for the accuracy on found FER2013 heads "
                                                  "(default: the shipped model)")
    ap.add_argument("--votes", default=None, help="FER+ votes CSV, for the accuracy against the annotators' majority "
                                                  "(default: ferplus_votes.csv beside or above --data, if there)")
    ap.add_argument("--setups", default=DEFAULT_SETUPS, help="comma list of set-ups (default: %(default)s)")
    ap.add_argument("--widths", type=common.numbers(), default=list(WIDTHS),
                    help="face widths in px (default: %(default)s)")
    ap.add_argument("--frames", type=common.number(), default=40, help="frames per width (default: %(default)s)")
    ap.add_argument("--per-frame", type=common.number(), default=4,
                    help="heads asked for per frame; fewer fit at large widths (default: %(default)s)")
    ap.add_argument("--fer", type=common.number(low=0), default=150,
                    help="FER2013 val faces to blend into heads (default: %(default)s)")
    ap.add_argument("--overlap", type=float, default=DetectorConfig().tile_overlap, help="tile overlap, a fraction of a tile (default: %(default)s)")
    ap.add_argument("--min-face-px", type=int, default=DetectorConfig().min_face_px,
                    help="detector min_face_px for the named models (default: the config's, %(default)s)")
    ap.add_argument("--warmup", type=common.number(low=0), default=5,
                    help="untimed frames per set-up (default: %(default)s)")
    return ap


def main(argv=None) -> int:
    return common.script_main(NAME, build_parser(), run, figure, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
