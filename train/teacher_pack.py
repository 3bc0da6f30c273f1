"""The training and validation images with their targets in one compressed file, for training a
teacher on another machine (a GPU one, which has PyTorch but neither this project's data
loaders nor TensorFlow): `python -m train.teacher_pack --data data/fer2013 --out runs/pack.npz`.

Images are keyed by a hash of their pixels, so the probabilities a teacher computes on them
(train/torch_teacher.py) find their images again whatever order or layout a student's
dataset has. The targets are the ones `edge train --labels ferplus` builds (votes, doubtful
images left out), so teacher and student learn the same thing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.files import write_atomic
from edge.labels import LABELS


def pixel_keys(x: np.ndarray) -> np.ndarray:
    """One 16-hex-digit key per image of x (n, h, w) uint8: identical pixels, identical key."""
    x = np.ascontiguousarray(x, dtype=np.uint8)
    return np.array([hashlib.sha1(img.tobytes()).hexdigest()[:16] for img in x])


def encoded(x: np.ndarray, names: list[str], root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets): each image as its original file's bytes where they decode to exactly its
    pixels (FER2013's JPEGs: the pack stays at the dataset's size), else as a lossless PNG."""
    import cv2

    blobs = []
    for img, name in zip(x, names):
        f = root / name
        raw = np.fromfile(f, np.uint8) if f.is_file() else np.zeros(0, np.uint8)
        back = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE) if raw.size else None
        if back is None or back.shape != img.shape or not np.array_equal(back, img):
            raw = cv2.imencode(".png", img)[1].ravel()
        blobs.append(raw)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.concatenate(blobs) if blobs else np.zeros(0, np.uint8), offsets


def decoded(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The (n, h, w) uint8 images encoded() packed."""
    import cv2

    return np.stack([cv2.imdecode(blob[a:b], cv2.IMREAD_GRAYSCALE) for a, b in zip(offsets[:-1], offsets[1:])])


def make_pack(data: str, votes: str | None, out: Path) -> dict:
    """Write the pack to out; returns the counts it holds."""
    from train.data import load_dataset, train_val
    from train.settings import TrainSettings
    from train.trainer import INPUT_SIZE, targets
    from train.votes import majority_labels, read_votes

    ds = load_dataset(data, size=INPUT_SIZE)
    s = TrainSettings(data=data, out="", labels="ferplus", votes=votes)
    tr_all, va, _ = train_val(ds, s.val_fraction, s.seed)
    tr, tr_y, va_k, _, info = targets(s, tr_all, va)
    root = Path(data) if Path(data).is_dir() else Path(data).parent
    arrays = {"labels": np.array(LABELS), "fingerprint": np.array(ds.fingerprint)}
    for split, part in (("train", tr), ("val", va)):
        arrays[f"{split}_bytes"], arrays[f"{split}_offsets"] = encoded(part.x, part.names, root)
        arrays[f"{split}_keys"] = pixel_keys(part.x)
        arrays[f"{split}_folder"] = part.y.astype(np.int8)
    arrays["train_targets"] = tr_y.astype(np.float16)
    arrays["val_majority"] = majority_labels(va.names, read_votes(s.votes)).astype(np.int8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # the JPEGs' headers compress, their data does not
    write_atomic(out, buf.getvalue())
    return {"train": len(tr), "val": len(va), "val_with_majority": int((arrays["val_majority"] >= 0).sum()),
            "votes": info["train"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.teacher_pack", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Dataset folder with train/ and val/ (or fer2013.csv).")
    p.add_argument("--votes", default=None, help="FER+ votes CSV (default: ferplus_votes.csv beside or above --data).")
    p.add_argument("--out", required=True, help="The pack to write (.npz).")
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.suffix != ".npz":
        print(f"--out {out}: the pack is an .npz file; give a name ending in .npz.", file=sys.stderr)
        return 2
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        counts = make_pack(a.data, a.votes, out)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Could not write {out}: {exc.strerror}; choose another --out.", file=sys.stderr)
        return 2
    print(f"{out}: {counts['train']} training images with their targets, {counts['val']} validation images "
          f"({counts['val_with_majority']} with a FER+ majority); {out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
