"""Box rasterisation with inclusive ends (TRUST_METRICS.md section 1)."""

from __future__ import annotations

import numpy as np

from bundle.data.masks import boxes_to_mask


def test_inclusive_ends_at_original_size():
    mask = boxes_to_mask([(2, 1, 3, 2)], (6, 8))
    expected = np.zeros((6, 8), bool)
    expected[1:4, 2:6] = True  # y0=1..y1=3, x0=2..x1=5 inclusive
    np.testing.assert_array_equal(mask, expected)


def test_boxes_are_rescaled_and_ored():
    mask = boxes_to_mask([(0, 0, 100, 100), (512, 512, 256, 128)], (1024, 1024), (128, 128))
    assert mask[:13, :13].all() and not mask[13, 13]
    assert mask[64:81, 64:97].all() and not mask[81, 64] and not mask[64, 97]
    assert mask.sum() == 13 * 13 + 17 * 33


def test_boxes_are_clipped_to_the_image():
    mask = boxes_to_mask([(6, 6, 10, 10)], (8, 8))
    assert mask.sum() == 4 and mask[6:, 6:].all()
    partly_outside = boxes_to_mask([(-3, -2, 4, 3)], (8, 8))
    assert partly_outside.sum() == 2 * 2 and partly_outside[:2, :2].all()
    assert not boxes_to_mask([(-30, -30, 4, 4), (20, 1, 3, 3)], (8, 8)).any()
