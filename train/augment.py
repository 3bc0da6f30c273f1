"""On-the-fly augmentation in the input pipeline (numpy + OpenCV), never in the dataset
and never inside the model graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate_deg: float = 12.0
    shift: float = 0.1  # fraction of the side
    zoom: float = 0.12  # +- fraction
    brightness: float = 25.0  # +- grey levels
    contrast: float = 0.25  # +- fraction
    erase_p: float = 0.4
    erase_area: tuple[float, float] = (0.02, 0.15)


def augment_batch(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Randomly transformed float32 copy of a uint8 (n, s, s) batch, still 0-255 pixels."""
    import cv2

    n, s = x.shape[0], x.shape[1]
    out = np.empty((n, s, s), np.float32)
    c = (s - 1) / 2.0
    for i in range(n):
        img = x[i]
        if cfg.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        m = cv2.getRotationMatrix2D((c, c), rng.uniform(-cfg.rotate_deg, cfg.rotate_deg),
                                    1.0 + rng.uniform(-cfg.zoom, cfg.zoom))
        m[:, 2] += rng.uniform(-cfg.shift, cfg.shift, 2) * s
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (s, s), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        mean = img.mean()
        img = (img - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
        img += rng.uniform(-cfg.brightness, cfg.brightness)
        if rng.random() < cfg.erase_p:
            area = rng.uniform(*cfg.erase_area) * s * s
            aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
            eh = int(min(s, round(np.sqrt(area * aspect))))
            ew = int(min(s, round(np.sqrt(area / aspect))))
            top, left = rng.integers(0, s - eh + 1), rng.integers(0, s - ew + 1)
            img[top : top + eh, left : left + ew] = rng.uniform(0, 255, (eh, ew))
        out[i] = np.clip(img, 0, 255)
    return out
