"""Expression accuracy on small faces: FER2013 val faces degraded to a face width before
classification, through the edge classifier, for each way of upscaling the crop to 48x48.

A camera sees a face of width W px; the crop the model reads is the detector box grown by
the card's crop rule (side = scale * W, 1.25 * W for BlazeFace), then resized to 48x48. A
FER2013 image is such a crop already, so its face is 48 / scale = 38 px wide. Two ways of
degrading it, both reported:

  face width W   the crop is shrunk to round(scale * W) px (area filter, as a sensor
                 integrates light) and resized back to 48: the camera's face of width W;
  crop side S    the 48x48 crop itself shrunk to S px and back (S = 40, 32, 24): the
                 stricter reading, as if the whole crop were S px wide.

The up step is done with each OpenCV interpolation in --interpolations; the pipeline's own
is edge.pipeline.preprocess.UPSCALE.

    python benchmarks/face_width_accuracy.py --data /work/data/fer2013
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from benchmarks.head_detection import default_data  # noqa: E402
from benchmarks.heads import split_root  # noqa: E402

NAME = "face_width_accuracy"
FACE_WIDTHS = (64, 48, 40, 32, 24)
CROP_SIDES = (40, 32, 24)
INTERPOLATIONS = ("linear", "cubic", "area", "lanczos4", "nearest")


def load_split(data: Path, split: str, labels: list[str], limit: int | None, seed: int):
    """(images (n, 48, 48) uint8, label indices) of <data>/<split>/<class>/* (or <data>/<class>/*);
    a seeded sample when limit."""
    import cv2

    from edge.errors import UserError
    from edge.labels import LABELS, label_index
    from edge.pipeline.sources import IMAGE_SUFFIXES

    root = split_root(data, split)
    # Folder names as training reads them (the other Kaggle layout's disgusted, fearful, surprised
    # too): a class compared by its folder's exact name was left out of the figures unsaid.
    found = [(p, label_index(p.parent.name)) for p in sorted(root.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    files = [(p, labels.index(LABELS[i])) for p, i in found if i is not None and LABELS[i] in labels]
    if other := sorted({p.parent.name for p, i in found if i is None or LABELS[i] not in labels}):
        print(f"Left out the images in {', '.join(other)} under {root}: no class of the model "
              f"({', '.join(labels)}) has that name.", file=sys.stderr, flush=True)
    if not files:
        raise UserError(f"No images under {root}/<class>/; pass --data to the extracted FER2013 folder.")
    if limit and limit < len(files):
        idx = np.random.default_rng(seed).choice(len(files), limit, replace=False)
        files = [files[i] for i in sorted(idx)]
    from train.data import FER2013_SIZE

    images, ys, unreadable = [], [], []
    for p, y in files:
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if im is None:  # a damaged file is left out and named, not a numpy error for the whole run
            unreadable.append(str(p))
            continue
        if im.shape != (FER2013_SIZE, FER2013_SIZE):  # the degradations start from FER2013's crop size
            im = cv2.resize(im, (FER2013_SIZE, FER2013_SIZE), interpolation=cv2.INTER_AREA)
        images.append(im)
        ys.append(y)
    if unreadable:
        print(f"Left out {len(unreadable)} file(s) that are not readable images: {', '.join(unreadable[:3])}"
              + (" ..." if len(unreadable) > 3 else "") + ".", file=sys.stderr, flush=True)
    if not images:
        raise UserError(f"None of the images under {root}/<class>/ could be read; pass --data to the extracted "
                        "FER2013 folder.")
    return np.stack(images), np.array(ys)


def degrade(images: np.ndarray, side: int, up: str) -> np.ndarray:
    """Each 48x48 image shrunk to side x side (area filter), then back to 48 with `up`."""
    import cv2

    size = images.shape[1]
    if side >= size:
        return images
    flag = getattr(cv2, f"INTER_{up.upper()}")
    return np.stack([cv2.resize(cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA), (size, size),
                                interpolation=flag) for im in images])


def run(args, argv) -> dict:
    from edge.pipeline.classifier import Classifier
    from edge.pipeline.preprocess import UPSCALE

    model = common.classifier_model(args.model)
    clf = Classifier(model, num_threads=args.threads)
    images, y = load_split(Path(args.data), args.split, clf.labels, args.limit, args.seed)
    scale = clf.card.crop_for("blazeface").scale
    print(f"{len(images)} {args.split} faces; crop rule scale {scale} (the FER face is {48 / scale:.0f} px wide)")

    def accuracy(x) -> float:
        return round(float((clf.predict_many(x).argmax(1) == y).mean()), 4)

    full = accuracy(images)
    done: dict[tuple[int, str], float] = {}  # (crop side, interpolation) -> accuracy, measured once
    rows = []
    for kind, values in (("face_width", args.widths), ("crop_side", args.sides)):
        for v in values:
            side = int(round(scale * v)) if kind == "face_width" else v
            for up in args.interpolations:
                if (side, up) not in done:
                    done[side, up] = accuracy(degrade(images, side, up)) if side < images.shape[1] else full
                acc = done[side, up]
                rows.append({"kind": kind, "value": v, "crop_px": side, "upscale": up, "accuracy": acc,
                             "drop_pp": round(100 * (full - acc), 2)})
                # the change in points, signed as the markdown's: a drop is negative
                print(f"{kind} {v:3d} (crop {side:2d} px) {up:9s} accuracy {acc:.4f} "
                      f"({round(100 * (acc - full), 2):+.2f} pp)")
    report = common.run_header(NAME, argv, [model])
    report.update({"data": str(args.data), "split": args.split, "images": len(images), "limit": args.limit,
                   "threads": args.threads, "crop_scale": scale, "pipeline_upscale": UPSCALE,
                   "full_resolution_accuracy": full, "rows": rows})
    return report


def markdown(report: dict) -> str:
    ups = list(dict.fromkeys(r["upscale"] for r in report["rows"]))
    lines = [common.md_header(f"Expression accuracy on small faces ({report['images']} FER2013 {report['split']} faces)",
                              report), "",
             f"Full resolution: **{report['full_resolution_accuracy']:.4f}** (calibrated edge classifier, flip average "
             f"as the card says). The pipeline upscales with `{report['pipeline_upscale']}`. Face width W: the crop is "
             f"{report['crop_scale']} x W px before it is resized to 48 (a FER2013 face is "
             f"{48 / report['crop_scale']:.0f} px wide, so W >= 40 loses nothing); crop side S: the whole 48-px crop "
             "shrunk to S px. Accuracy (drop in points):", ""]
    for kind, title in (("face_width", "face width W"), ("crop_side", "crop side S")):
        values = list(dict.fromkeys(r["value"] for r in report["rows"] if r["kind"] == kind))
        cell = {(r["value"], r["upscale"]): r for r in report["rows"] if r["kind"] == kind}
        rows = [[f"{v} px (crop {cell[(v, ups[0])]['crop_px']})",
                 *[f"{cell[(v, u)]['accuracy']:.4f} ({-cell[(v, u)]['drop_pp']:+.1f})" for u in ups]] for v in values]
        lines += [common.md_table([title, *[f"up: {u}" for u in ups]], rows), ""]
    return "\n".join(lines)


def figure(report: dict, out: Path):
    plt = common.pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = [r for r in report["rows"] if r["kind"] == "face_width"]
    for up in dict.fromkeys(r["upscale"] for r in rows):
        pts = sorted((r["value"], r["accuracy"]) for r in rows if r["upscale"] == up)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"upscale {up}")
    ax.axhline(report["full_resolution_accuracy"], color="black", linestyle=":", linewidth=1, label="full resolution")
    ax.axhline(report["full_resolution_accuracy"] - 0.03, color="grey", linestyle=":", linewidth=1, label="-3 points")
    ax.set_xlabel("face width in the frame (px)")
    ax.set_ylabel("val accuracy")
    ax.set_title("Expression accuracy vs face width")
    return common.save_plot(plt, fig, ax, out, NAME, fontsize=8)


def interpolations(text: str) -> list[str]:
    """--interpolations linear,cubic: each one of INTERPOLATIONS (OpenCV's INTER_* names)."""
    import argparse

    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in INTERPOLATIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(bad) or repr(text)}: choose from {', '.join(INTERPOLATIONS)}")
    return names


def build_parser():
    ap = common.script_parser(__doc__, default_threads=1)
    ints = common.numbers()
    ap.add_argument("--data", default=str(default_data()), help="extracted FER2013 folder (default: %(default)s)")
    ap.add_argument("--split", default="val", help="split folder to read (default: %(default)s)")
    ap.add_argument("--model", default=None, help="int8 .tflite with model.json beside it, or the folder `edge convert "
                    "--out` wrote (default: the shipped model)")
    ap.add_argument("--limit", type=common.number(), default=None,
                    help="a seeded sample of this many faces (default: all)")
    ap.add_argument("--widths", type=ints, default=list(FACE_WIDTHS), help="face widths W (default: %(default)s)")
    ap.add_argument("--sides", type=ints, default=list(CROP_SIDES), help="crop sides S (default: %(default)s)")
    ap.add_argument("--interpolations", type=interpolations, default=list(INTERPOLATIONS),
                    help="OpenCV interpolations for the up step (default: %(default)s)")
    return ap


def main(argv=None) -> int:
    return common.script_main(NAME, build_parser(), run, figure, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
