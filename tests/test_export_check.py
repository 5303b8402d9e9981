"""A model the ONNX exporter refuses is a one-line error before the search on a predicted target too (a measured
target exports the original to time it), not after minutes of pruning."""
from __future__ import annotations

import torch

from edge_compress.compress.archs import get_arch
from edge_compress.compress.cli.main import main


def test_an_unexportable_model_is_refused_before_pruning(tmp_path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "vgg.pt"
    torch.save(get_arch("vgg13").factory(num_classes=10, width_mult=0.125).state_dict(), model)
    # At 32x32 the features end at 1x1, and a 7x7 adaptive pooling of 1x1 has no ONNX export at opset 13.
    code = main(["--target", "jetson-nano", "--arch", "vgg13", "--arch-kwargs", '{"num_classes": 10, "width_mult": 0.125}',
                 "--input-shape", "1x3x32x32", "--macs", "50%", "--out", str(tmp_path / "out"), str(model)])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot export operator 'aten::adaptive_avg_pool2d'" in err and "round 1" not in err
    assert not (tmp_path / "out").exists()
