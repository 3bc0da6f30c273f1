"""Camera degradations in training augmentation and in evaluation."""

import dataclasses

import numpy as np

from tests.conftest import pattern_image
from train.augment import AugmentConfig, augment_batch, degrade


def _batch(n=16):
    rng = np.random.default_rng(0)
    return np.stack([pattern_image(i % 7, rng) for i in range(n)])


def _sharpness(x):
    return float(np.abs(np.diff(x.astype(np.float32), axis=2)).mean())


def test_degrade_keeps_the_size_and_loses_detail():
    x = _batch()
    assert np.array_equal(degrade(x, 48), x)
    small = degrade(x, 24)
    assert small.shape == x.shape and small.dtype == np.uint8
    assert _sharpness(small) < 0.8 * _sharpness(x)


def test_camera_augmentations_stay_in_range_and_are_seeded():
    x = _batch()
    every = dataclasses.replace(AugmentConfig(), rescale_p=1.0, blur_p=1.0, noise_p=1.0, jpeg_p=1.0)
    a = augment_batch(x, np.random.default_rng(5), every)
    assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 255
    assert np.array_equal(a, augment_batch(x, np.random.default_rng(5), every))
    none = dataclasses.replace(every, rescale_p=0.0, blur_p=0.0, noise_p=0.0, jpeg_p=0.0)
    assert _sharpness(a) < _sharpness(augment_batch(x, np.random.default_rng(5), none))
