"""Face crop -> model input. The one implementation used by train, convert and edge.

A detector box frames a face more tightly than FER2013's crops do, so a box is expanded
by the model card's crop rule before it is resized to the model's input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CropRule:
    """How a detector box becomes the square crop the model was trained on.

    scale: side of the square crop divided by the box's larger side.
    shift_y: crop centre moved down by this fraction of the box height (negative: up; a
    BlazeFace box holds the chin but little forehead, so FER2013's framing sits higher).
    """

    scale: float = 1.0
    shift_y: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "CropRule":
        return cls(scale=float(d["scale"]), shift_y=float(d["shift_y"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def square(self, x: float, y: float, w: float, h: float) -> tuple[int, int, int]:
        """(left, top, side) of the square crop for box (x, y, w, h) in pixels."""
        side = max(w, h) * self.scale
        cx = x + w / 2.0
        cy = y + h / 2.0 + self.shift_y * h
        return int(round(cx - side / 2)), int(round(cy - side / 2)), max(1, int(round(side)))


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale view of a gray, BGR or BGRA image."""
    import cv2

    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


# OpenCV interpolation for enlarging a crop smaller than the model input (a face under
# ~38 px). Chosen on benchmarks/face_width_accuracy.py: on val faces degraded to a 24-px
# face width, Lanczos loses 1.6 points of accuracy, bilinear 4.9.
UPSCALE = "lanczos4"


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a grayscale image to size x size (area filter when shrinking, UPSCALE when enlarging)."""
    import cv2

    if gray.shape[0] == size and gray.shape[1] == size:
        return gray
    shrink = gray.shape[0] > size or gray.shape[1] > size
    flag = cv2.INTER_AREA if shrink else getattr(cv2, f"INTER_{UPSCALE.upper()}")
    return cv2.resize(gray, (size, size), interpolation=flag)


def crop_face(gray: np.ndarray, box: tuple[float, float, float, float], rule: CropRule, size: int) -> np.ndarray:
    """The size x size uint8 face crop for a box; parts outside the frame repeat the edge."""
    import cv2

    left, top, side = rule.square(*box)
    h, w = gray.shape[:2]
    pad = max(0, -left, -top, left + side - w, top + side - h)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        left += pad
        top += pad
    return resize_square(gray[top : top + side, left : left + side], size)



LOOK_PX = 24  # the crop is shrunk to this before its gradients are described
LOOK_NAME = "hog24"  # names the look's definition (the benchmark caches looks under it)
_hog = None


def look(crop: np.ndarray) -> np.ndarray:
    """A face crop's appearance as a unit vector (gradient histograms of the crop at 24x24,
    little moved by brightness and contrast): the dot product of two looks is near 1 for the
    same face in nearby frames and lower for another person."""
    import cv2

    global _hog
    if _hog is None:  # winSize, blockSize, blockStride, cellSize, nbins: 3x3 blocks of 2x2 cells
        _hog = cv2.HOGDescriptor((LOOK_PX, LOOK_PX), (12, 12), (6, 6), (6, 6), 9)
    small = cv2.resize(crop, (LOOK_PX, LOOK_PX), interpolation=cv2.INTER_AREA)
    v = np.asarray(_hog.compute(small), np.float32).ravel()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)
