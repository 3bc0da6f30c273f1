"""Whole heads with context (hair, ears, neck, collar) built from images that packages ship,
and queue scenes made of them. Nothing here is committed image data.

Head sources:
- `astronaut`: scikit-image's astronaut photo (head and shoulders, colour, sharp);
- `fer`: a FER2013 face blended into the astronaut's head (her hair, ears, neck and suit
  around it, the FER face tinted to her skin), so the FER expression label is kept;
- `lfw`: the 100 faces of scikit-image's lfw_subset.npy (25x25 grey LFW crops) blended the
  same way: other people, but only 25 px of detail.

All heads share the astronaut's hair, ears and suit: the benchmark measures how a detector
finds a face of a given width with the context a camera sees, not how it copes with many
hair styles, skin tones, glasses, masks or profile views.

A scene is a frame with several heads of one face width inside a queue region (the
central 75%), on a cluttered background, with one camera condition: lighting, blur, JPEG,
sensor noise or a small rotation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

W, H = 640, 480
QUEUE_REGION = (0.125, 0.125, 0.75, 0.75)  # x, y, w, h fractions: where heads are placed
# The astronaut's head and shoulders in data.astronaut(), and her face box inside it (the
# box BlazeFace full range gives at full resolution, which defines "face width").
ASTRO_CROP = (105, 15, 350, 310)  # x0, y0, x1, y1
ASTRO_FACE = (176 - 105, 71 - 15, 104, 104)  # x, y, w, h in the crop
# A FER2013 crop is the detector box scaled by the card's crop rule (1.25, shift -0.05);
# an lfw_subset crop frames the face a little wider.
FER_FRAME = (1.25, -0.05)
LFW_FRAME = (1.35, -0.02)
CONDITIONS = ("clean", "dim", "bright", "side_light", "blur", "jpeg", "noise", "rotated")


@dataclass
class Head:
    image: np.ndarray  # BGR
    face: tuple[float, float, float, float]  # x, y, w, h in `image`
    source: str
    label: str | None = None  # the FER2013 expression, for `fer` heads
    name: str | None = None  # `fer` heads: the image's path from the dataset root (the FER+ votes file's key)


def astronaut_head() -> Head:
    import cv2
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    x0, y0, x1, y1 = ASTRO_CROP
    return Head(np.ascontiguousarray(img[y0:y1, x0:x1]), ASTRO_FACE, "astronaut")


def _face_square(head: Head, frame: tuple[float, float]) -> tuple[int, int, int]:
    x, y, w, h = head.face
    side = w * frame[0]
    cx, cy = x + w / 2, y + h / 2 + frame[1] * h
    return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))


def blend_face(template: Head, face_gray: np.ndarray, frame: tuple[float, float], source: str,
               label: str | None = None) -> Head:
    """`face_gray` (a square grey face crop framed by `frame`) blended into the template's
    face: an elliptic feathered mask keeps the template's hair, ears and neck, the grey
    face is tinted and levelled to the template's skin."""
    import cv2

    img = template.image.copy()
    left, top, side = _face_square(template, frame)
    face = cv2.resize(face_gray, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    patch = img[top : top + side, left : left + side].astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    c = (side - 1) / 2
    ellipse = ((xx - c) / (0.40 * side)) ** 2 + ((yy - c * 1.04) / (0.50 * side)) ** 2
    mask = np.clip((1.0 - ellipse) / 0.25, 0, 1)[:, :, None]  # 1 inside, feathered edge
    skin = patch[mask[:, :, 0] > 0.9]
    tint = skin.mean(axis=0) / max(1.0, skin.mean())  # BGR ratio of the skin to its grey
    face = (face - face.mean()) * (skin.std() / max(1.0, face.std())) + skin.mean()
    coloured = face[:, :, None] * tint[None, None, :]
    img[top : top + side, left : left + side] = np.clip(mask * coloured + (1 - mask) * patch, 0, 255).astype(np.uint8)
    return Head(img, template.face, source, label)


def split_root(data: Path, split: str) -> Path:
    """<data>/<split> when it exists (an extracted FER2013 folder), else <data> (class folders);
    one sentence when <data> holds split folders but not that one (a mistyped --split)."""
    from edge.errors import UserError
    from edge.labels import label_index

    data = Path(data)
    if (data / split).is_dir():
        return data / split
    folders = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    if folders and all(label_index(name) is None for name in folders):  # split folders, not classes
        raise UserError(f"{data} has no split folder {split} (it has {', '.join(folders)}); pass --split one of them.")
    return data


def fer_heads(data: Path, n: int, seed: int, split: str = "val") -> list[Head]:
    """n seeded-random FER2013 faces of <data>/<split>/<class>/ (or <data>/<class>/), each
    blended into a head."""
    import random

    import cv2

    from edge.errors import UserError
    from edge.labels import LABELS, label_index

    root = split_root(data, split)
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise UserError(f"No FER2013 images under {root}/<class>/; pass --data to the extracted FER2013 folder "
                        "(val/<class>/).")
    chosen = random.Random(seed).sample(files, min(n, len(files)))
    template = astronaut_head()
    heads = []
    for p in chosen:
        # The class as training names it (disgusted is disgust): the expression accuracy compares it with
        # the model's labels; a folder that names no class gives the face no truth, not a wrong one.
        cls = label_index(p.parent.name)
        head = blend_face(template, cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), FER_FRAME, "fer",
                          LABELS[cls] if cls is not None else None)
        head.name = p.resolve().relative_to(root.resolve().parent).as_posix()
        heads.append(head)
    return heads


def lfw_heads() -> list[Head]:
    """The 100 faces of scikit-image's lfw_subset (the other 100 images are not faces)."""
    from skimage import data

    faces = (data.lfw_subset()[:100] * 255).astype(np.uint8)
    template = astronaut_head()
    return [blend_face(template, f, LFW_FRAME, "lfw") for f in faces]


# ---------------------------------------------------------------------------- scenes

@functools.lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A cluttered BGR backdrop: a tinted texture from scikit-image (brick, gravel, grass,
    text) under a light gradient, with shelf-like boxes."""
    import cv2

    tex = _texture(str(rng.choice(["brick", "gravel", "grass", "text"])))
    tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    tex = (tex - tex.mean()) * rng.uniform(0.2, 0.5)
    base = rng.uniform(70, 170) + rng.uniform(-20, 20, size=3)
    grad = np.linspace(-20, 20, h)[:, None, None] * rng.choice([-1, 1])
    img = base[None, None, :] + tex[:, :, None] + grad
    for _ in range(int(rng.integers(3, 8))):
        bw, bh = int(rng.integers(w // 12, w // 3)), int(rng.integers(h // 12, h // 3))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        img[y : y + bh, x : x + bw] = rng.uniform(20, 235, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class Placed:
    head: int  # index into the heads list
    box: tuple[float, float, float, float]  # the face's x, y, w, h in the frame


def _rotate(img: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    import cv2

    m = cv2.getRotationMatrix2D(centre, angle, 1.0)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def paste_head(frame: np.ndarray, head: Head, x: int, y: int, face_w: float, angle: float = 0.0):
    """Paste `head` scaled so its face is `face_w` px wide with the head's top-left at (x, y),
    edges feathered into the frame and the part below the frame cut off. Returns the face box."""
    import cv2

    k = face_w / head.face[2]
    img = head.image
    if angle:
        fx, fy, fw, fh = head.face
        img = _rotate(img, angle, (fx + fw / 2, fy + fh / 2))
    hw, hh = max(1, int(round(img.shape[1] * k))), max(1, int(round(img.shape[0] * k)))
    small = cv2.resize(img, (hw, hh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC).astype(np.float32)
    edge = max(1.0, 0.06 * hw)
    ramp = lambda n: np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / edge, 0, 1)  # noqa: E731
    alpha = (ramp(hh)[:, None] * ramp(hw)[None, :])[:, :, None]
    hh = min(hh, frame.shape[0] - y)
    region = frame[y : y + hh, x : x + hw].astype(np.float32)
    mixed = alpha[:hh] * small[:hh] + (1 - alpha[:hh]) * region
    frame[y : y + hh, x : x + hw] = np.clip(mixed, 0, 255).astype(np.uint8)
    fx, fy, fw, fh = head.face
    return (x + fx * k, y + fy * k, fw * k, fh * k)


def apply_condition(frame: np.ndarray, condition: str, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """One camera condition on a finished frame; `scale` > 1 for a frame rendered larger."""
    import cv2

    f = frame.astype(np.float32)
    if condition == "dim":
        f = 255 * (f / 255) ** rng.uniform(1.5, 2.2) * rng.uniform(0.5, 0.8)
    elif condition == "bright":
        f = f * rng.uniform(1.15, 1.35) + 10  # over-exposed: highlights clip
    elif condition == "side_light":
        ramp = np.linspace(rng.uniform(0.35, 0.6), rng.uniform(1.1, 1.4), f.shape[1])
        f = f * (ramp if rng.random() < 0.5 else ramp[::-1])[None, :, None]
    elif condition == "blur":
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.8, 1.6) * scale)
    elif condition == "noise":
        f = f + rng.normal(0, rng.uniform(6, 12), f.shape)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if condition == "jpeg":
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 50))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def head_size(head: Head, face_w: float) -> tuple[int, int]:
    k = face_w / head.face[2]
    return int(round(head.image.shape[1] * k)), int(round(head.image.shape[0] * k))


def make_scene(heads: list[Head], picks: list[int], face_w: float, condition: str, seed: int,
               scale: float = 1.0) -> tuple[np.ndarray, list[Placed]]:
    """A (W*scale)x(H*scale) frame with the picked heads at face width face_w*scale, faces
    inside QUEUE_REGION, heads not overlapping (a head that does not fit is left out)."""
    rng = np.random.default_rng(seed)
    fw, fh = int(round(W * scale)), int(round(H * scale))
    frame = background(rng, fw, fh)
    qx, qy, qw, qh = QUEUE_REGION
    rx0, ry0, rx1, ry1 = qx * fw, qy * fh, (qx + qw) * fw, (qy + qh) * fh
    px = face_w * scale
    taken, placed = [], []
    for idx in picks:
        head = heads[idx]
        k = px / head.face[2]
        hw, hh = head_size(head, px)
        fl, ft = head.face[0] * k, head.face[1] * k  # the face's offset in the scaled head
        xs = (max(0.0, rx0 - fl), min(fw - hw, rx1 - fl - px))
        ys = (max(0.0, ry0 - ft), ry1 - ft - px)
        if xs[0] > xs[1] or ys[0] > ys[1]:
            continue
        for _ in range(60):
            x, y = int(rng.uniform(*xs)), int(rng.uniform(*ys))
            if all(x + hw <= ax or ax + aw <= x or y + hh <= ay or ay + ah <= y for ax, ay, aw, ah in taken):
                taken.append((x, y, hw, hh))
                angle = float(rng.uniform(-15, 15)) if condition == "rotated" else 0.0
                placed.append(Placed(idx, paste_head(frame, head, x, y, px, angle)))
                break
    return apply_condition(frame, condition, rng, scale), placed
