"""Build-machine conversion stage: Keras -> int8 TFLite with a parity gate and the model card."""
