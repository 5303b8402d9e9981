"""consumer-mi's block-by-block covariance (GroupContributions) against the whole (M, O, C) tensor."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from edge_compress.compress.metrics import consumer_mi


def _readers(gen: torch.Generator, channels: int = 12):
    """Two readers of a 12-channel group: one with an output subset and reading channels twice (a
    concatenation), one with all its outputs; patches from two batches of different sizes."""
    wide = nn.Conv2d(2 * channels, 40, 3, padding=1, bias=False)
    narrow = nn.Conv2d(channels, 9, 1, bias=False)
    for conv in (wide, narrow):
        nn.init.normal_(conv.weight, generator=gen)
    out = []
    for conv, outs, root in ((wide, consumer_mi.output_subset(wide, gen, 16), torch.arange(channels).repeat(2)),
                             (narrow, None, torch.arange(channels))):
        x = [torch.randn(5, conv.in_channels, 7, 7, generator=gen) for _ in range(2)]
        patches = [consumer_mi.gather_patches(conv, x[0], 30, gen), consumer_mi.gather_patches(conv, x[1], 20, gen)]
        out.append((conv, patches, outs, torch.arange(conv.in_channels), root))
    return out


def test_a_block_is_those_columns_of_the_whole_tensor():
    source = consumer_mi.GroupContributions(_readers(torch.Generator().manual_seed(0)), 12)
    whole = source.block(0, source.shape[1])
    assert whole.shape == (50, 16 + 9, 12)
    for a, b in ((0, 5), (10, 20), (14, 25), (16, 17)):   # inside one reader, across both, one column
        torch.testing.assert_close(source.block(a, b), whole[:, a:b], rtol=1e-12, atol=1e-12)


def test_the_covariances_built_block_by_block_are_those_of_the_whole_tensor(monkeypatch):
    source = consumer_mi.GroupContributions(_readers(torch.Generator().manual_seed(1)), 12)
    z = source.z()
    whole = consumer_mi.CorrelationLoss(z, source.block(0, source.shape[1]))
    monkeypatch.setattr(consumer_mi, "BLOCK_ELEMENTS", 50 * 12 * 3)   # blocks of 3 output columns
    blocks = consumer_mi.CorrelationLoss(z, source)
    torch.testing.assert_close(blocks.cov, whole.cov, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(blocks.cov_zx, whole.cov_zx, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(blocks.var_z, whole.var_z, rtol=1e-9, atol=1e-12)


def test_a_non_finite_value_in_a_later_block_is_refused(monkeypatch):
    readers = _readers(torch.Generator().manual_seed(2))
    readers[1][1][1][3, 0, 0] = float("nan")   # the second reader: the last columns, the second batch
    source = consumer_mi.GroupContributions(readers, 12)
    z = torch.nan_to_num(source.z())            # so only the contributions carry the NaN
    monkeypatch.setattr(consumer_mi, "BLOCK_ELEMENTS", 50 * 12 * 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        consumer_mi.CorrelationLoss(z, source)
