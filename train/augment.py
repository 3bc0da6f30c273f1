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
    # Real cameras: a face a detector finds at 24-48 px is upscaled to the model's size, after
    # optics blur, sensor noise and JPEG/stream compression. 0 turns each one off.
    rescale_p: float = 0.5
    rescale_side: tuple[int, int] = (24, 48)
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_p: float = 0.3
    noise_std: tuple[float, float] = (1.0, 6.0)  # grey levels
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)


def degrade(x: np.ndarray, side: int) -> np.ndarray:
    """A uint8 (n, s, s) batch shrunk to side x side and scaled back up, as the edge path
    resizes a small face crop to the model's input."""
    from edge.pipeline.preprocess import resize_square

    s = x.shape[1]
    return np.stack([resize_square(resize_square(img, side), s) for img in x]) if len(x) else x.copy()


def _camera(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Blur, downscale, sensor noise and JPEG, in the order a camera applies them, then the
    upscale the edge path does; float32 in and out."""
    import cv2

    from edge.pipeline.preprocess import resize_square

    s = img.shape[0]
    img = np.clip(img, 0, 255)
    if rng.random() < cfg.blur_p:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*cfg.blur_sigma))
    small = rng.random() < cfg.rescale_p
    if small:
        img = resize_square(img, int(rng.integers(cfg.rescale_side[0], cfg.rescale_side[1] + 1)))
    if rng.random() < cfg.noise_p:
        img = img + rng.normal(0, rng.uniform(*cfg.noise_std), img.shape).astype(np.float32)
    if rng.random() < cfg.jpeg_p:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    if small:
        img = resize_square(np.clip(img, 0, 255), s)
    return img


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
        # Rotation, zoom and shift are also the crop jitter: a detector box is never placed the same twice.
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
        out[i] = np.clip(_camera(img, rng, cfg), 0, 255)
    return out


def mix_batch(x: np.ndarray, y: np.ndarray, sw: np.ndarray, rng: np.random.Generator,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
    """(x, y, sw) with each image mixed with another of the batch: mixup blends whole images,
    cutmix pastes a box of the other image; targets and sample weights are mixed in the share
    each image has of the pixels. With both on, each batch takes one of the two at random."""
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    if not use_cutmix and mixup_alpha <= 0:
        return x, y, sw
    lam = rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha)
    perm = rng.permutation(len(x))
    if use_cutmix:
        h, w = x.shape[1], x.shape[2]
        side = np.sqrt(1.0 - lam)  # the box's side, as a share of the image's, so its area is 1 - lam
        bh, bw = int(round(h * side)), int(round(w * side))
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        top, bottom = max(cy - bh // 2, 0), min(cy + (bh + 1) // 2, h)
        left, right = max(cx - bw // 2, 0), min(cx + (bw + 1) // 2, w)
        x = x.copy()
        x[:, top:bottom, left:right] = x[perm, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)  # the box clipped at the border is smaller
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm], lam * sw + (1 - lam) * sw[perm]
