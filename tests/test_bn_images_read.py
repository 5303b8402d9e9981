"""How many calibration images a BatchNorm re-estimation reads: all at CIFAR sizes, a bounded number of large ones."""
from __future__ import annotations

import torch
import torch.nn as nn

from edge_compress.compress.bn_recalibration import MIN_IMAGES, images_read, recalibrate_batchnorm


def test_cifar_calibration_sets_are_read_whole_and_large_images_up_to_a_budget():
    assert images_read(torch.zeros(1024, 3, 32, 32)) == 1024
    assert images_read(torch.zeros(256, 3, 224, 224)) == MIN_IMAGES
    assert images_read(torch.zeros(10, 3, 224, 224)) == 10


def test_the_statistics_are_those_of_evenly_spaced_images():
    """A calibration set stored class by class: the images read are spread over all of it, not a prefix."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2))
    n = 2 * MIN_IMAGES
    x = torch.randn(n, 3, 224, 224)
    x[n // 2:] += 10                           # the second "class": a prefix would never see it
    recalibrate_batchnorm(model, x, batch_size=MIN_IMAGES)   # one batch: its variance is the set's
    read = x[torch.arange(MIN_IMAGES) * n // MIN_IMAGES]
    assert (read[:, 0, 0, 0] > 5).sum() == MIN_IMAGES // 2
    with torch.no_grad():
        y = model[0](read)
    torch.testing.assert_close(model[1].running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model[1].running_var, y.var((0, 2, 3)), rtol=1e-3, atol=1e-4)
