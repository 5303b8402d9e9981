"""How many calibration images the export pass's parity check reads."""
from __future__ import annotations

import torch

from edge_compress.compress.passes.export import MIN_PARITY_SAMPLES, PARITY_PIXELS, parity_samples


def test_cifar_images_keep_the_64_image_check():
    assert PARITY_PIXELS // (32 * 32) == 64
    assert parity_samples(torch.zeros(256, 3, 32, 32), 1) == 64
    assert parity_samples(torch.zeros(20, 3, 32, 32), 1) == 20   # fewer images: all of them


def test_large_images_read_a_few_not_a_budget_of_one():
    assert parity_samples(torch.zeros(256, 3, 224, 224), 1) == MIN_PARITY_SAMPLES
    assert parity_samples(torch.zeros(256, 3, 64, 64), 1) == 16


def test_a_fixed_export_batch_gets_whole_batches():
    assert parity_samples(torch.zeros(256, 3, 224, 224), 3) == 6


def test_flat_inputs_count_one_pixel_per_sample():
    assert parity_samples(torch.zeros(5000, 10), 1) == 5000
