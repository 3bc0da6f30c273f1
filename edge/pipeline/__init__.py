"""The per-frame data path: sources -> detectors -> crop -> classifier -> tracking -> mood -> alerts."""
