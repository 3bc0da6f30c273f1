"""Camera degradations in training augmentation and in evaluation."""

import dataclasses

import numpy as np

from tests.conftest import pattern_image
from train.augment import AugmentConfig, augment_batch, degrade, mix_batch
from train.data import FER2013_SIZE


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


def _labelled(n=8, side=FER2013_SIZE):
    """Image i is all grey level i + 1 and its target is class i % 7 one-hot, weight i + 1:
    which image a pixel came from can be read off the pixel."""
    x = np.repeat(np.arange(1, n + 1, dtype=np.float32)[:, None, None], side * side, 1).reshape(n, side, side)
    y = np.eye(7, dtype=np.float32)[np.arange(n) % 7]
    return x, y, np.arange(1, n + 1, dtype=np.float32)


def test_mixing_is_off_by_default():
    x, y, sw = _labelled()
    out = mix_batch(x, y, sw, np.random.default_rng(0))
    assert all(a is b for a, b in zip(out, (x, y, sw)))


def test_cutmix_targets_and_weights_follow_each_images_share_of_the_pixels():
    mixed = 0
    for seed in range(20):
        x, y, sw = _labelled()
        mx, my, msw = mix_batch(x, y, sw, np.random.default_rng(seed), cutmix_alpha=1.0)
        assert np.allclose(my.sum(1), 1) and mx.dtype == x.dtype
        for i in range(len(x)):
            levels, counts = np.unique(mx[i], return_counts=True)
            assert len(levels) <= 2  # itself and the image a box came from
            mixed += len(levels) == 2
            share = dict(zip(levels, counts / mx[i].size))
            # the weight and target of each source image in proportion to its pixels
            assert np.isclose(msw[i], sum(level * s for level, s in share.items()))
            expect = sum(s * y[int(level) - 1] for level, s in share.items())
            assert np.allclose(my[i], expect, atol=1e-6)
        assert np.array_equal(x, _labelled()[0])  # the caller's batch is not written to
    assert mixed > 20 * 8 / 2


def test_mixup_blends_whole_images_and_both_together_take_one_per_batch():
    x, y, sw = _labelled()
    mx, my, _ = mix_batch(x, y, sw, np.random.default_rng(3), mixup_alpha=0.4)
    assert all(len(np.unique(img)) == 1 for img in mx)  # a blend of two flat images is flat
    kinds = set()
    for seed in range(30):
        mx, _, _ = mix_batch(x, y, sw, np.random.default_rng(seed), mixup_alpha=0.4, cutmix_alpha=1.0)
        kinds.add("cutmix" if any(len(np.unique(img)) == 2 for img in mx) else "mixup")
    assert kinds == {"cutmix", "mixup"}
