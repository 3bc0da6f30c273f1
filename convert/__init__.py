"""Build-machine conversion stage: Keras -> int8 TFLite with a parity gate and the model card."""
import os

# TF 2.21's oneDNN kernels segfault in the backward pass on AVX-512 CPUs (seen with
# mini_xception and queue_net); the plain Eigen kernels are stable. Set before TF loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
