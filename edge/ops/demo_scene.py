"""The demo's queue scene, made on the spot from a face a package ships: scikit-image's
astronaut photo (public domain, NASA). No dataset is needed and no image data is committed.

Four people wait in line (the same photo, mirrored, scaled for distance and lit differently).
Three of them turn unhappy one after another and calm down again later; the fourth stays
cheerful. The unhappy face is synthesised from the smiling one: the brows are pulled down and
together, the upper lids lowered, and the mouth region is mirrored top to bottom, which turns
the smile into a grimace. Where to do that comes from BlazeFace's keypoints (eyes, mouth) on the photo, so no
coordinates are hard-coded. The shipped classifier reads that face as angry and the original
as happy (the demo prints what it reads; nothing here asserts it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError, require_modules

W, H, FPS = 640, 480, 10.0  # 10 frames per second keep the demo quick on a busy laptop
SECONDS = 26.0
FADE_S = 0.6  # an expression change is a cross-fade this long


@dataclass(frozen=True)
class Person:
    x: int  # left edge of the head-and-shoulders picture in the frame, pixels
    y: int  # its top edge
    face_px: int  # face width in the frame
    mirror: bool
    gain: float  # brightness: people stand in different light
    unhappy_from_s: float | None = None  # None: cheerful all along
    unhappy_until_s: float | None = None


# Nearest (largest) first; three turn unhappy at 4-5 s and calm down at 17-18 s. With the
# default mood and alert settings (a face counts after 3 s; raise after 8 s above the raise
# share, clear after 3 s below the clear share) the alert is raised at about 13 s and cleared
# at about 21 s, with a few seconds to spare on either side.
PEOPLE = (
    Person(x=20, y=150, face_px=100, mirror=False, gain=1.0, unhappy_from_s=4.0, unhappy_until_s=17.0),
    Person(x=190, y=120, face_px=88, mirror=True, gain=0.85, unhappy_from_s=4.5, unhappy_until_s=17.5),
    Person(x=345, y=100, face_px=78, mirror=False, gain=1.1, unhappy_from_s=5.0, unhappy_until_s=18.0),
    Person(x=485, y=85, face_px=70, mirror=True, gain=0.95),
)


def negative_people(t_s: float) -> int:
    """How many people look unhappy at media time t_s (the scene's ground truth)."""
    return sum(p.unhappy_from_s is not None and p.unhappy_from_s <= t_s < p.unhappy_until_s for p in PEOPLE)


# Where BlazeFace full range (untiled) finds the photo's one face, (x, y, w, h), and its
# keypoints (the subject's right eye, left eye, nose tip, mouth, right and left ear), measured
# once: the photo never changes, and the scene should not move when the detector's input
# resizing does (the unhappy face is drawn from these points).
ASTRONAUT_BOX = (173.27, 67.93, 106.56, 106.56)
ASTRONAUT_KEYPOINTS = ((205.31, 102.03), (246.55, 105.25), (224.59, 130.32), (223.42, 148.28), (181.62, 109.12),
                       (269.75, 114.96))


def astronaut_photo() -> np.ndarray:
    """scikit-image's astronaut (512x512), BGR."""
    import cv2

    require_modules("edge demo's queue scene (scikit-image's sample photo)", "skimage")
    from skimage import data
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def unhappy_face(img: np.ndarray, eyes: np.ndarray, mouth: np.ndarray, face_w: float) -> np.ndarray:
    """The same face with furrowed brows, narrowed eyes and a downturned mouth. eyes: (2, 2)
    x, y of the subject's right and left eye; mouth: (2,) x, y; face_w: the face box width, pixels."""
    import cv2

    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = face_w / 105.0  # the sizes below were tuned on the astronaut's 105 px face
    map_x, map_y = xx.copy(), yy.copy()
    for (ex, ey), inward in zip(eyes, (1.0, -1.0)):
        # inner brow ends move down and towards the nose
        g = np.exp(-((xx - (ex + inward * 8 * u)) ** 2 + (yy - (ey - 14 * u)) ** 2) / (2 * (9 * u) ** 2))
        map_y -= 18 * u * g
        map_x -= inward * 8 * u * g
        # the upper lid comes down a little (a glare rather than a smile's open eyes)
        g = np.exp(-((xx - ex) ** 2 + (yy - (ey - 4 * u)) ** 2) / (2 * (7 * u) ** 2))
        map_y -= 6 * u * g
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mx, my = mouth
    x0, x1 = int(round(mx - 36 * u)), int(round(mx + 36 * u))
    y0, y1 = int(round(my - 16 * u)), int(round(my + 16 * u))
    flipped = out.copy()
    flipped[y0:y1, x0:x1] = out[y0:y1, x0:x1][::-1]  # the smile mirrored top to bottom: a grimace
    mask = np.zeros((h, w), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 4 * u)[..., None]  # no visible seam
    return (out * (1 - mask) + flipped * mask).astype(np.uint8)


def head_and_shoulders(img: np.ndarray, box) -> np.ndarray:
    """The picture around a face box with the context a detector expects: hair, ears, neck
    (little of the spacesuit: its collar ring alone scores as a small face for BlazeFace)."""
    x, y, w, h = box
    x0, x1 = int(max(0, x - 0.45 * w)), int(min(img.shape[1], x + 1.45 * w))
    y0, y1 = int(max(0, y - 0.75 * h)), int(min(img.shape[0], y + 1.45 * h))
    return img[y0:y1, x0:x1]


def soft_edges(h: int, w: int, border: float = 0.08) -> np.ndarray:
    """(h, w, 1) weights that fade a picture into the background over `border` of its width,
    so its rectangle's edges do not look like features to a detector."""
    import cv2

    b = max(2, int(border * w))
    mask = np.zeros((h, w), np.float32)
    mask[b:-b, b:-b] = 1.0
    return cv2.GaussianBlur(mask, (0, 0), b / 2)[..., None]


def background() -> np.ndarray:
    """A plain shop wall with a shelf line, BGR."""
    rows = np.linspace(205, 150, H, dtype=np.float32)[:, None]
    wall = np.repeat(rows, W, axis=1)
    wall[300:308] -= 60  # a shelf edge behind the queue
    img = np.clip(wall, 0, 255).astype(np.uint8)
    return np.dstack([img * 0.95, img, img * 1.02]).clip(0, 255).astype(np.uint8)


class Scene:
    """Renders frames of the queue at any media time."""

    def __init__(self):
        import cv2

        photo = astronaut_photo()
        box, kp = ASTRONAUT_BOX, np.array(ASTRONAUT_KEYPOINTS)
        faces = {"happy": photo, "unhappy": unhappy_face(photo, kp[:2], kp[3], box[2])}
        self.pictures = []  # per person: {expression: picture at the person's scale}
        for p in PEOPLE:
            scale = p.face_px / box[2]
            pics = {}
            for name, face in faces.items():
                pic = head_and_shoulders(face, box)
                pic = cv2.resize(pic, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                pic = pic[:, ::-1] if p.mirror else pic
                pics[name] = np.clip(pic.astype(np.float32) * p.gain, 0, 255)
            self.pictures.append(pics)
        self.masks = [soft_edges(*pics["happy"].shape[:2]) for pics in self.pictures]
        self.base = background()

    def frame(self, t_s: float) -> np.ndarray:
        img = self.base.astype(np.float32)
        for i, (p, pics, mask) in reversed(list(enumerate(zip(PEOPLE, self.pictures, self.masks)))):  # far first
            k = 0.0
            if p.unhappy_from_s is not None:
                k = np.clip((t_s - p.unhappy_from_s) / FADE_S, 0, 1) - np.clip((t_s - p.unhappy_until_s) / FADE_S, 0, 1)
            pic = pics["happy"] * (1 - k) + pics["unhappy"] * k
            dx = int(round(3 * math.sin(0.7 * t_s + i)))  # people shift their weight a little
            dy = int(round(2 * math.sin(1.1 * t_s + 2 * i)))
            x, y = p.x + dx, p.y + dy
            h, w = min(pic.shape[0], H - y), min(pic.shape[1], W - x)
            a = mask[:h, :w]
            img[y : y + h, x : x + w] = pic[:h, :w] * a + img[y : y + h, x : x + w] * (1 - a)
        return img.astype(np.uint8)


def write_scene(path: Path, seconds: float = SECONDS, fps: float = FPS) -> dict:
    """Writes the scene video; returns its description (also written beside it as JSON)."""
    import cv2

    scene = Scene()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write the demo video {path} (no MPEG-4 encoder in this OpenCV build).")
    try:
        for i in range(int(round(seconds * fps))):
            writer.write(scene.frame(i / fps))
    finally:
        writer.release()
    info = {"video": str(path), "seconds": seconds, "fps": fps, "size": [W, H],
            "faces_from": "scikit-image data.astronaut (NASA, public domain)",
            "people": [asdict(p) for p in PEOPLE]}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
