"""How many calibration images a BatchNorm re-estimation reads: all at CIFAR sizes, a bounded number of large ones."""
from __future__ import annotations

import torch
import torch.nn as nn

from edge_compress.compress.bn_recalibration import MIN_IMAGES, images_read, recalibrate_batchnorm


def test_cifar_calibration_sets_are_read_whole_and_large_images_up_to_a_budget():
    assert images_read(torch.zeros(1024, 3, 32, 32)) == 1024
    assert images_read(torch.zeros(256, 3, 224, 224)) == MIN_IMAGES
    assert images_read(torch.zeros(10, 3, 224, 224)) == 10


def test_the_statistics_are_those_of_the_images_read():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2))
    x = torch.randn(MIN_IMAGES + 16, 3, 224, 224)
    x[MIN_IMAGES:] += 10                       # images past the budget would move the mean a lot
    recalibrate_batchnorm(model, x, batch_size=32)
    with torch.no_grad():
        y = model[0](x[:MIN_IMAGES])
    torch.testing.assert_close(model[1].running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model[1].running_var, y.var((0, 2, 3)), rtol=1e-3, atol=1e-4)
