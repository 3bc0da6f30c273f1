"""Start a Keras model from a shipped int8 .tflite of the same architecture (`--init-from
model_int8.tflite`), for when that model's Keras file is gone.

The converter folded every BatchNormalization into its convolution (kernel and bias) and
the input rescale into the first convolution, then quantized them. Here the int8 weights
are dequantized and put back; each BatchNormalization is set to the identity-plus-bias the
fold left, with moving statistics measured on training images so that batch statistics in
training start where inference is.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge.errors import UserError

_WEIGHTED = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")


def _dequantize(interp, detail) -> np.ndarray:
    q = detail["quantization_parameters"]
    raw = interp.get_tensor(detail["index"]).astype(np.float64)
    scales, zeros, axis = q["scales"], q["zero_points"], q["quantized_dimension"]
    if len(scales) == 0:
        return raw
    shape = [1] * raw.ndim
    shape[axis] = -1
    return (raw - zeros.reshape(shape)) * scales.reshape(shape) if len(scales) > 1 else (raw - zeros[0]) * scales[0]


def _folded_ops(path: Path, layer_names: list[str]) -> dict[str, list[dict]]:
    """Keras layer name -> the tflite ops holding its weights, in graph order: each op's
    dequantized weights and bias and whether it reads the model input."""
    from edge.pipeline.runtime import load_interpreter

    interp = load_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    input_index = interp.get_input_details()[0]["index"]
    if any(d["dtype"] == np.float16 for d in details.values()):  # its weights exist only once dequantized at run time
        raise UserError(f"{path} is a float16 model; --init-from needs the int8 .tflite (model_int8.tflite) "
                        "or a .keras model.")
    found: dict[str, list[dict]] = {}
    for op in interp._get_ops_details():  # the public API lists tensors, not which op uses them
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        weights = details[op["inputs"][1]]
        owner = [n for n in layer_names if re.search(rf"/{re.escape(n)}_\d+/", weights["name"] + "/")]
        if len(owner) != 1:
            raise UserError(f"{path}: cannot tell which layer the weights '{weights['name']}' belong to; "
                            "--init-from a .tflite needs one converted from the same architecture.")
        bias = _dequantize(interp, details[op["inputs"][2]]) if len(op["inputs"]) > 2 and op["inputs"][2] >= 0 else None
        found.setdefault(owner[0], []).append({"kind": op["op_name"], "w": _dequantize(interp, weights), "b": bias,
                                               "reads_input": op["inputs"][0] == input_index})
    return found


def load_from_tflite(model, path: str | Path, sample: np.ndarray) -> None:
    """Set `model`'s weights from the int8 .tflite at path; sample: uint8 (n, s, s) training crops."""
    path = Path(path)
    layers = {layer.name: layer for layer in model.layers}
    weighted = [n for n, layer in layers.items() if type(layer).__name__ in _WEIGHTED]
    ops = _folded_ops(path, weighted)
    if set(ops) != set(weighted):
        raise UserError(f"{path} does not hold the weights of every {model.name} layer (missing: "
                        f"{', '.join(sorted(set(weighted) - set(ops)))}); pass a .tflite converted from {model.name}.")
    try:
        folded_bias = _set_kernels(model, layers, weighted, ops)
    except ValueError as exc:  # a layer of another width
        raise UserError(f"{path} was not converted from this {model.name} ({exc}); "
                        "pass a .tflite of the same architecture.") from exc
    _unfold_batchnorm(model, layers, folded_bias, sample, path)


def _set_kernels(model, layers, weighted, ops) -> dict[str, np.ndarray]:
    """Put the dequantized kernels back; returns each BN-followed convolution's folded bias."""
    rescale = next((layer.scale for layer in model.layers if type(layer).__name__ == "Rescaling"), 1.0)
    folded_bias = {}
    for name in weighted:
        layer, found = layers[name], ops[name]
        kind = type(layer).__name__
        if kind == "Dense":
            w, b = found[0]["w"].T, found[0]["b"]
            layer.set_weights([w, b])
            continue
        if kind == "SeparableConv2D":
            dw, pw = found  # the depthwise op comes first; its bias is zero (no bias in Keras)
            kernels = [dw["w"].transpose(1, 2, 3, 0), pw["w"].transpose(1, 2, 3, 0)]
            bias = pw["b"] + pw["w"][:, 0, 0, :] @ dw["b"] if dw["b"] is not None else pw["b"]
        else:
            kernels = [found[0]["w"].transpose(1, 2, 3, 0)]
            bias = found[0]["b"]
            if found[0]["reads_input"]:
                kernels[0] = kernels[0] / rescale  # the converter folded the 1/255 rescale into this kernel
        current = layer.get_weights()
        new = [k.reshape(v.shape).astype(np.float32) for k, v in zip(kernels, current)]
        if len(current) > len(kernels):  # a convolution with its own bias (no BN after it)
            layer.set_weights(new + [bias.astype(np.float32)])
        else:
            layer.set_weights(new)
            folded_bias[name] = bias
    return folded_bias


def _unfold_batchnorm(model, layers, folded_bias, sample, path) -> None:
    import keras

    # The BN after each convolution: first an exact identity plus the folded bias...
    bn_of = {}
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            src = layer._inbound_nodes[0].parent_nodes[0].operation.name
            if src not in folded_bias:
                raise UserError(f"{path}: {layer.name} does not follow a convolution; cannot unfold it.")
            bn_of[layer.name] = src
            eps = layer.epsilon
            n = len(folded_bias[src])
            layer.set_weights([np.ones(n), folded_bias[src], np.zeros(n), np.full(n, 1 - eps)])
    # ... then moving statistics of each convolution's output, with gamma and beta keeping
    # inference unchanged: gamma * (z - mean) / sqrt(var + eps) + beta == z + bias.
    convs = [layers[bn_of[name]].output for name in bn_of]
    probe = keras.Model(model.input, convs)
    outs = probe.predict(sample.astype(np.float32)[..., None], batch_size=256, verbose=0)
    for name, z in zip(bn_of, outs):
        layer = layers[name]
        mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        std = np.sqrt(var + layer.epsilon)
        layer.set_weights([std, mean + folded_bias[bn_of[name]], mean, var])
