"""Build-machine training stage (TensorFlow/Keras). May import edge; edge never imports it."""
