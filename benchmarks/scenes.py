"""Scenes built from real faces for tests, benchmarks and the demo video: FER2013 crops
upscaled onto a background, and scikit-image's astronaut photo (shipped in its wheel).
Nothing here is committed image data.

    python benchmarks/scenes.py demo.mp4 [--seconds 20] [--fer DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

W, H = 640, 480


def background(seed: int = 0) -> np.ndarray:
    """A soft vertical gradient with a little texture, BGR."""
    rng = np.random.default_rng(seed)
    g = np.linspace(70, 150, H)[:, None] + rng.normal(0, 4, (H, W))
    img = np.clip(g, 0, 255).astype(np.uint8)
    return np.dstack([img, img, img])


def astronaut_face() -> np.ndarray:
    """The astronaut's head and shoulders (BGR), about 180 px wide."""
    import cv2
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return img[30:270, 120:340]


def place(frame: np.ndarray, face: np.ndarray, x: int, y: int, size: int) -> None:
    """Paste `face` (gray or BGR) resized so its width is `size` px at (x, y), in place."""
    import cv2

    face = face if face.ndim == 3 else cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    h = int(round(face.shape[0] * size / face.shape[1]))
    face = cv2.resize(face, (size, h), interpolation=cv2.INTER_CUBIC)
    h, w = min(h, H - y), min(size, W - x)
    frame[y : y + h, x : x + w] = face[:h, :w]


def queue_positions(t_s: float, slots, dwell_s: float = 4.0, walk_s: float = 1.0, gap_every: int = 6):
    """Where the people of an endless queue are at t_s, as [(person, x, y, width)]. People stand
    in `slots` ((x, y, width), front first); every dwell_s the front person walks out to the left
    and everyone steps one slot forward, taking walk_s, while a newcomer walks into the last slot
    from the right. Every gap_every-th person is missing (a gap in the queue), so the count of
    faces changes as in a real queue. Only people wholly inside the frame are returned."""
    import math

    n = len(slots)
    cycle = math.floor(t_s / dwell_s)
    a = min((t_s - cycle * dwell_s) / walk_s, 1.0)  # progress of this cycle's step forward

    def slot(k):  # k = -1: just out at the left, k = n: just out at the right
        if k < 0:
            x, y, w = slots[0]
            return -w - 1, y, w
        if k >= n:
            x, y, w = slots[-1]
            return W + 1, y, w
        return slots[k]

    out = []
    for k in range(n + 1):  # person cycle+k steps from slot k to slot k-1
        person = cycle + k
        if gap_every and person % gap_every == gap_every - 1:
            continue
        (x0, y0, w0), (x1, y1, w1) = slot(k), slot(k - 1)
        x, y, w = (int(round(u + a * (v - u))) for u, v in ((x0, x1), (y0, y1), (w0, w1)))
        if 0 <= x and x + w <= W:
            out.append((person, x, y, w))
    return out


def write_video(path: Path, frames, fps: float) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def fer_images(root: Path, label: str) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((root / label).glob("*.jpg"))]


def demo_frames(seconds: float = 20.0, fps: float = 15.0, fer_root: Path | None = None):
    """The astronaut drifting across the frame, joined by FER2013 faces when a dataset
    folder (class folders) is given."""
    astro = astronaut_face()
    extra = []
    if fer_root:
        for label in ("happy", "angry", "sad", "surprise"):
            extra += fer_images(Path(fer_root), label)[:1]
    for i in range(int(seconds * fps)):
        f = background(i)
        place(f, astro, 20 + abs((i * 2) % 400 - 200), 120, 200)  # walks back and forth
        for slot, face in enumerate(extra[:2]):
            place(f, face, 330 + slot * 150, 150 + slot * 40, 140)
        yield f


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="Write a 640x480 demo video of real faces for `edge run --source`.")
    ap.add_argument("out", type=Path, help="video file to write (.mp4)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--fer", type=Path, default=None, help="a FER2013 split folder (e.g. data/fer2013/val) to add faces from")
    a = ap.parse_args(argv)
    write_video(a.out, demo_frames(a.seconds, a.fps, a.fer), a.fps)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
