"""SSD anchors in the scheme of MediaPipe's SsdAnchorsCalculator, for BlazeFace.

Consecutive layers that share a stride are merged into one feature map, each of them
adding its anchors at every location of that map. BlazeFace uses `fixed_anchor_size`,
so every anchor is 1 x 1 (in units of the input) and only the centres matter; the
scales are still computed so the generator is correct for the general case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SsdAnchorOptions:
    input_size: int  # square model input, pixels
    strides: tuple[int, ...]  # one per layer
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    offset: float = 0.5  # anchor centre inside its cell, x and y
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0  # > 0 adds one anchor per layer
    fixed_anchor_size: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.strides)


# Options of mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt
# together with the shared SsdAnchorsCalculator node of face_detection.pbtxt.
SHORT_RANGE = SsdAnchorOptions(input_size=128, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0)
FULL_RANGE = SsdAnchorOptions(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0)


def _layer_scale(opts: SsdAnchorOptions, layer: int) -> float:
    if opts.num_layers == 1:
        return (opts.min_scale + opts.max_scale) / 2.0
    return opts.min_scale + (opts.max_scale - opts.min_scale) * layer / (opts.num_layers - 1)


def generate_anchors(opts: SsdAnchorOptions) -> np.ndarray:
    """(N, 4) float32 anchors as (x_centre, y_centre, w, h), normalised to the input size,
    in the order the model emits its boxes: feature map, row, column, anchor."""
    out: list[np.ndarray] = []
    layer = 0
    while layer < opts.num_layers:
        stride = opts.strides[layer]
        sizes: list[tuple[float, float]] = []  # (w, h) of each anchor at one location
        last = layer
        while last < opts.num_layers and opts.strides[last] == stride:
            scale = _layer_scale(opts, last)
            for ratio in opts.aspect_ratios:
                r = math.sqrt(ratio)
                sizes.append((scale * r, scale / r))
            if opts.interpolated_scale_aspect_ratio > 0:
                nxt = 1.0 if last == opts.num_layers - 1 else _layer_scale(opts, last + 1)
                s = math.sqrt(scale * nxt)
                r = math.sqrt(opts.interpolated_scale_aspect_ratio)
                sizes.append((s * r, s / r))
            last += 1
        cells = int(math.ceil(opts.input_size / stride))
        centres = (np.arange(cells, dtype=np.float32) + opts.offset) / cells
        cy, cx = np.meshgrid(centres, centres, indexing="ij")  # row-major: y outer, x inner
        k = len(sizes)
        xs = np.repeat(cx.reshape(-1), k)
        ys = np.repeat(cy.reshape(-1), k)
        if opts.fixed_anchor_size:
            ws = np.ones_like(xs)
            hs = np.ones_like(xs)
        else:
            wh = np.asarray(sizes, dtype=np.float32)
            ws = np.tile(wh[:, 0], cells * cells)
            hs = np.tile(wh[:, 1], cells * cells)
        out.append(np.stack([xs, ys, ws, hs], axis=1).astype(np.float32))
        layer = last
    return np.concatenate(out, axis=0)
