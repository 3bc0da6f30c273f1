"""Queue-mood monitor: the on-device runtime. Never imports TensorFlow, train or convert."""

__version__ = "0.1.0"
