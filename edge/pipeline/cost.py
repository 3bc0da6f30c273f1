"""What one invoke of a TFLite model costs, in multiply-accumulates (MACs), counted from the
model's own ops: the device budget is set in MACs and calls per second, not in this machine's
milliseconds (int8 throughput differs ~10x between AVX2, AVX-512 VNNI and a Pi's NEON).

Counted: CONV_2D (output elements x kernel h x w x input channels), DEPTHWISE_CONV_2D (output
elements x kernel h x w) and FULLY_CONNECTED (output elements x input features), per batch
item. Pooling, adds, mean and softmax are a few per cent at most and are left out.
"""

from __future__ import annotations

import numpy as np

from edge.errors import UserError

COUNTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _op_macs(name: str, out_shape, weight_shape) -> int:
    """MACs of one op for its whole output (all batch items)."""
    out_elems = int(np.prod(out_shape))
    if name == "CONV_2D":  # weights [out_ch, kh, kw, in_ch]
        return out_elems * int(np.prod(weight_shape[1:]))
    if name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, out_ch]
        return out_elems * int(weight_shape[1]) * int(weight_shape[2])
    return out_elems * int(weight_shape[-1])  # FULLY_CONNECTED: weights [units, in_features]


def macs_per_invoke(interp) -> dict:
    """{"total": MACs of one batch-1 invoke, "by_op": {op: MACs}, "layers": {op: count}} for
    an allocated interpreter (ai-edge-litert / tflite-runtime / tf.lite)."""
    ops_details = getattr(interp, "_get_ops_details", None)
    if ops_details is None:
        raise UserError("This TFLite runtime does not list a model's ops, so MACs cannot be counted; "
                        "install ai-edge-litert (pip install ai-edge-litert).")
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    by_op: dict[str, int] = {}
    layers: dict[str, int] = {}
    for op in ops_details():
        name = op["op_name"]
        if name not in COUNTED:
            continue
        out_shape = shapes[int(op["outputs"][0])]
        batch = max(int(out_shape[0]), 1) if len(out_shape) > 1 else 1
        macs = _op_macs(name, out_shape, shapes[int(op["inputs"][1])]) // batch
        by_op[name] = by_op.get(name, 0) + macs
        layers[name] = layers.get(name, 0) + 1
    return {"total": sum(by_op.values()), "by_op": by_op, "layers": layers}


def model_macs(model_path) -> dict:
    """macs_per_invoke for a .tflite file (a fresh interpreter at the file's batch size)."""
    from edge.pipeline.runtime import load_interpreter

    return macs_per_invoke(load_interpreter(model_path, 1))
