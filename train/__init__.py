"""Build-machine training stage (TensorFlow/Keras). May import edge; edge never imports it."""
import os

# TF 2.21's oneDNN kernels segfault in the backward pass on AVX-512 CPUs (seen with
# mini_xception and queue_net); the plain Eigen kernels are stable. Set before TF loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
