"""Starting a run from another model's weights (--init-from): the same architecture, or a wider
one grown from a narrower, as the same function."""

from __future__ import annotations

import numpy as np

from edge.errors import UserError
from train.keras_io import load_keras


def _grown(mine, theirs: np.ndarray, mixes: bool) -> np.ndarray:
    """`theirs` copied into the leading channels of `mine` (a wider layer's weight as built).
    A kernel that mixes channels (`mixes`: a convolution's or a dense layer's, not a depthwise
    one's) gets zeros from the new input channels into the old output channels, so the old
    channels compute what they did and the grown model starts as the same function; the new
    channels keep their random start and learn from there."""
    grown = mine.copy()
    if mixes and grown.ndim >= 2:
        old_in, old_out = theirs.shape[-2], theirs.shape[-1]
        grown[..., old_in:, :old_out] = 0.0
    grown[tuple(slice(0, n) for n in theirs.shape)] = theirs
    return grown


def _mixes_channels(layer, weight) -> bool:
    """A convolution's, pointwise or dense kernel; not a depthwise kernel (Keras names a
    DepthwiseConv2D's "kernel" too), a batch norm's or a bias."""
    per_channel = type(layer).__name__ in ("DepthwiseConv2D", "BatchNormalization")
    return not per_channel and weight.path.endswith("kernel") and not weight.path.endswith("depthwise_kernel")


def _growable(mine: tuple, theirs: tuple) -> bool:
    """Only channel axes may grow (a kernel's last two, a vector's one): a larger spatial kernel
    would not compute the same function. A dense layer's inputs count as channels, as they are
    after queue_net's global pooling (not after a Flatten of a larger image)."""
    fixed = mine[:-2] if len(mine) >= 2 else ()
    return len(mine) == len(theirs) and fixed == theirs[:len(fixed)] and all(a >= b for a, b in zip(mine, theirs))


def load_matching_weights(model, start) -> list[str]:
    """Copy `start`'s weights into `model` layer by layer, where a layer of the same name has
    weights of the same shapes, or of shapes as large or larger in every axis (a wider model
    grown from a narrower one, see _grown); returns the names of the layers left as built. A
    model that shares fewer than half of its weighted layers is refused (most likely the wrong
    file)."""
    theirs = {layer.name: layer for layer in start.layers}
    weighted = [layer for layer in model.layers if layer.weights]
    fresh = []
    for layer in weighted:
        other = theirs.get(layer.name)
        w = other.get_weights() if other is not None else []
        shapes = [(tuple(b.shape), a.shape) for a, b in zip(w, layer.weights)]  # (mine, theirs)
        if len(w) == len(layer.weights) and all(a == b for a, b in shapes):
            layer.set_weights(w)
        elif len(w) == len(layer.weights) and all(_growable(a, b) for a, b in shapes):
            layer.set_weights([_grown(v.numpy(), t, _mixes_channels(layer, v)) for v, t in zip(layer.weights, w)])
        else:
            fresh.append(layer.name)
    if len(fresh) * 2 > len(weighted):
        raise UserError(f"Cannot start a {model.name} from {start.name}: only {len(weighted) - len(fresh)} of its "
                        f"{len(weighted)} layers match by name and shape; pass a run of the same or a related "
                        "architecture.")
    return fresh


def start_from(model, path: str, sample: np.ndarray) -> None:
    """Set `model`'s starting weights from a .keras model or an int8 .tflite (sample: uint8
    training crops for the rebuilt batch norms). A .tflite whose card (model.json beside it)
    names another architecture is rebuilt as that one, then matched layer by layer like a
    .keras start, so a related architecture can start from a shipped int8 file."""
    from train import archs

    if path.endswith(".tflite"):
        from train.from_tflite import load_from_tflite

        from edge.card import load_card

        try:  # no card, or one that cannot be read: the file is taken to be of this architecture
            arch = load_card(path).architecture
        except UserError:
            arch = None
        if not arch or arch == model.name or arch not in archs.ARCHITECTURES:
            load_from_tflite(model, path, sample)  # refuses, in one sentence, a file of another architecture
            return
        start = archs.build(arch, model.input_shape[1], model.output_shape[-1])
        load_from_tflite(start, path, sample)
    else:
        start = load_keras(path)  # one sentence for a file that is not a model
    fresh = load_matching_weights(model, start)
    if fresh:
        print(f"Started from {path} ({start.name}): every layer but {', '.join(fresh)}, which start fresh.")
