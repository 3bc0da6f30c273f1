"""The classifier's outputs on real FER2013 faces seen the way a queue camera sees them.

Each face is shown to the real classifier (the same `Classifier.predict` the Pi runs) several
times, each time jittered like a camera frame: the detector box shifted and rescaled, the face
resampled to its width in the frame (40-160 px), blurred, its brightness and contrast changed,
sensor noise added, then cut back to the model input through the card's crop size. The bank
holds the calibrated probabilities per face x width x jitter, so a simulated queue draws a
classifier output per frame without running the model: hundreds of queue-hours in minutes.

The bank is cached (npz) under $QUEUE_MOOD_CACHE or ~/.cache/queue-mood, keyed by the model's
sha256, the faces and the jitter settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WIDTHS_PX = (48, 80, 128)  # face widths in the frame the bank is made at (a person uses the nearest)


@dataclass(frozen=True)
class Jitter:
    """How much a camera frame varies one face (standard deviations unless a range)."""

    shift: float = 0.05  # box centre, fraction of the box side
    scale: float = 0.07  # box side, relative
    blur_px: tuple[float, float] = (0.0, 1.2)  # Gaussian sigma at frame resolution (focus, motion)
    gain: tuple[float, float] = (0.7, 1.3)  # contrast
    offset: float = 15.0  # brightness, gray levels
    noise: float = 4.0  # sensor noise, gray levels at frame resolution
    per_face: int = 4  # jittered views per face and width

    def key(self) -> dict:
        return asdict(self)


CROP_OVER_BOX = 1.25  # the crop a detector box becomes is about this much wider than the face


def jitter_face(face: np.ndarray, width_px: int, j: Jitter, rng: np.random.Generator) -> np.ndarray:
    """One camera view of a 48x48 FER2013 face (uint8) as the model input it would give."""
    import cv2

    from edge.pipeline.preprocess import resize_square

    size = face.shape[0]
    s = 1.0 + rng.normal(0, j.scale)
    dx, dy = rng.normal(0, j.shift, 2) * size
    m = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, s)
    m[:, 2] += (dx, dy)
    view = cv2.warpAffine(face, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    side = max(8, int(round(width_px * CROP_OVER_BOX)))  # the crop's side in frame pixels
    cam = cv2.resize(view, (side, side), interpolation=cv2.INTER_AREA if side < size else cv2.INTER_LINEAR)
    cam = cam.astype(np.float32)
    sigma = rng.uniform(*j.blur_px)
    if sigma > 0.2:
        cam = cv2.GaussianBlur(cam, (0, 0), sigma)
    cam = (cam - 128.0) * rng.uniform(*j.gain) + 128.0 + rng.normal(0, j.offset)
    cam += rng.normal(0, j.noise, cam.shape)
    return resize_square(np.clip(np.round(cam), 0, 255).astype(np.uint8), size)


@dataclass
class FaceBank:
    labels: list[str]
    face_labels: np.ndarray  # (faces,) class index of each FER2013 face
    probs: np.ndarray  # (faces, widths, per_face, classes) float32
    widths_px: tuple[int, ...]
    files: list[str]
    looks: np.ndarray | None = None  # (faces, widths, per_face, dims) float16: preprocess.look of each view
    # (faces, widths, per_face, 2, classes): each view seen once, as it is [0] and mirrored [1]
    # (schedule.flip_in_turn); None: only the averaged outputs in `probs`
    turn: np.ndarray | None = None

    def output(self, face: int, wbin: int, view: int, mirror: bool | None, flip_below: float = 1.0) -> np.ndarray:
        """The classifier's output on one view, as Classifier.predict gives it: the view as it is
        or mirrored (mirror: flip_in_turn), the view alone when its top class is at least
        flip_below sure, else both images averaged (also from a bank without single views)."""
        if self.turn is None:
            return self.probs[face, wbin, view]
        if mirror is not None:
            return self.turn[face, wbin, view, int(mirror)]
        return self.turn[face, wbin, view, 0] if self.alone(face, wbin, view, flip_below) else self.probs[face, wbin, view]

    def alone(self, face: int, wbin: int, view: int, flip_below: float) -> bool:
        """Whether, with both images due, the view as it is suffices: its top class is at least
        flip_below sure (flip_below < 1; never from a bank without single views)."""
        return self.turn is not None and flip_below < 1 and bool(self.turn[face, wbin, view, 0].max() >= flip_below)

    def images(self, face: int, wbin: int, view: int, mirror: bool | None, flip_below: float = 1.0) -> int:
        """Images through the classifier for `output` with the same arguments (the bank is of a
        flip-averaging model): one in turn or when the view alone suffices, else two."""
        return 1 if mirror is not None or self.alone(face, wbin, view, flip_below) else 2

    def width_index(self, width_px: float) -> int:
        return int(np.argmin([abs(w - width_px) for w in self.widths_px]))

    def relabel_by_votes(self, root: Path, votes) -> dict:
        """Take each face's class from the FER+ annotators' majority instead of FER2013's one
        label (which the ten annotators overrule on about a third of the images); a face with a
        tied or doubtful vote, or none, is left out (class -1). Returns what changed."""
        from edge.labels import LABELS
        from train.votes import majority_labels

        dataset = Path(root).resolve().parent
        names = [Path(f).resolve().relative_to(dataset).as_posix() for f in self.files]  # the votes file's keys
        # majority_labels indexes LABELS; the bank indexes the model's labels, which a card may order otherwise
        ours = np.array([self.labels.index(name) for name in LABELS])
        maj = majority_labels(names, votes)
        new = np.where(maj >= 0, ours[maj], -1).astype(np.int16)
        info = {"truth": "FER+ majority", "votes": votes.source, "kept": int((new >= 0).sum()),
                "left_out": int((new < 0).sum()), "changed_class": int(((new >= 0) & (new != self.face_labels)).sum())}
        self.face_labels = new
        return info

    def faces_of(self, classes: list[str]) -> np.ndarray:
        idx = [self.labels.index(c) for c in classes]
        return np.flatnonzero(np.isin(self.face_labels, idx))


def list_faces(root: Path, labels: list[str], per_class: int | None, seed: int) -> list[tuple[Path, int]]:
    """(file, class) for the FER2013 faces in root/<class>/, at most per_class per class (seeded)."""
    from edge.errors import UserError

    rng = np.random.default_rng(seed)
    out = []
    for k, name in enumerate(labels):
        files = sorted((root / name).glob("*.[jp][pn]g"))
        if per_class is not None and len(files) > per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        out += [(f, k) for f in files]
    if not out:
        raise UserError(f"No face images under {root}/<class>/ for classes {', '.join(labels)}; "
                        "pass --data with a FER2013 split folder (e.g. data/fer2013/val).")
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("QUEUE_MOOD_CACHE") or Path.home() / ".cache" / "queue-mood") / "face_bank"


def camera_views(files: list[Path], size: int, jitter: Jitter, seed: int, widths_px) -> np.ndarray:
    """(faces, widths, per_face, size, size) uint8 model inputs; the same for the same seed."""
    import cv2

    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    crops = np.empty((len(files), len(widths_px), jitter.per_face, size, size), np.uint8)
    for i, f in enumerate(tqdm(files, desc="face bank: camera views", unit="face", disable=None)):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) if img.shape != (size, size) else img
        for wi, w in enumerate(widths_px):
            for r in range(jitter.per_face):
                crops[i, wi, r] = jitter_face(img, w, jitter, rng)
    return crops


def outputs(classifier, crops: np.ndarray, mirror: bool | None, batch: int = 256) -> np.ndarray:
    """The classifier's calibrated output on each crop: both images averaged (mirror None), or
    the crop seen once, as it is or mirrored."""
    from tqdm import tqdm

    what = "both images" if mirror is None else "mirror images" if mirror else "images as seen"
    out = []
    for i in tqdm(range(0, len(crops), batch), desc=f"face bank: classifier, {what}", unit="batch", disable=None):
        part = crops[i : i + batch]
        out.append(classifier.predict(part, None if mirror is None else np.full(len(part), mirror)))
    return np.concatenate(out).astype(np.float32)


def read_cache(path: Path) -> dict:
    """The arrays of a cached bank; {} when there is none or it cannot be read (a run killed while
    an older release wrote it), so the bank is made again instead of every later run failing."""
    import zipfile
    import zlib

    try:
        with np.load(path) as npz:
            return dict(npz)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        print(f"face bank: the cache {path} cannot be read ({exc}); making it again", file=sys.stderr)
        return {}


def build_bank(classifier, root: Path, per_class: int | None, jitter: Jitter, seed: int,
               widths_px=WIDTHS_PX, use_cache: bool = True) -> FaceBank:
    from edge.card import sha256_file
    from edge.pipeline.preprocess import LOOK_NAME, look

    labels = list(classifier.labels)
    faces = list_faces(root, labels, per_class, seed)
    files = [f for f, _ in faces]
    key = json.dumps({"model": sha256_file(classifier.path), "files": [str(f) for f in files], "jitter": jitter.key(),
                      "widths": list(widths_px), "seed": seed}, sort_keys=True)
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    face_labels = np.array([k for _, k in faces], np.int16)
    cached = read_cache(path) if use_cache else {}
    looks_key = f"looks_{LOOK_NAME}"
    want_turn = classifier.flip_average  # a model without flip averaging has only one output per view
    if "probs" in cached and looks_key in cached and ("turn" in cached or not want_turn):
        return FaceBank(labels, face_labels, cached["probs"], tuple(widths_px), [str(f) for f in files],
                        cached[looks_key], cached.get("turn"))
    size = classifier.card.input_size
    crops = camera_views(files, size, jitter, seed, widths_px)
    flat = crops.reshape(-1, size, size)
    shape = (*crops.shape[:3], len(labels))
    probs = cached.get("probs")
    if probs is None:
        probs = outputs(classifier, flat, None).reshape(shape)
    turn = cached.get("turn")
    if turn is None and want_turn:
        turn = np.stack([outputs(classifier, flat, m).reshape(shape) for m in (False, True)], axis=3)
    looks = cached.get(looks_key)
    if looks is None:
        looks = np.stack([look(c) for c in flat]).reshape(*crops.shape[:3], -1).astype(np.float16)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if turn is None else {"turn": turn}
        from benchmarks.common import replace_file

        replace_file(path, lambda tmp: np.savez_compressed(tmp, face_labels=face_labels, probs=probs,
                                                           **{looks_key: looks}, **extra))
    return FaceBank(labels, face_labels, probs, tuple(widths_px), [str(f) for f in files], looks, turn)
