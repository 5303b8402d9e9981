"""Shared fixtures: a tiny model file, calibration data, and the path to ../shared when it exists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "models").is_dir():
        pytest.skip(f"../shared is not present at {SHARED}: the pretrained models and data live there")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A small `example-cnn` (width 8) state dict, with BatchNorm statistics from a few real batches."""
    from edge_compress.compress.archs import get_arch
    from edge_compress.compress.example import make_dataset, to_tensor

    torch.manual_seed(0)
    model = get_arch("example-cnn").factory(width=8)
    x, _ = make_dataset(128, seed=5)
    model.train()
    with torch.no_grad():
        model(to_tensor(x))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(model.eval().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory) -> Path:
    from edge_compress.compress.example import make_dataset

    x, y = make_dataset(96, seed=7)
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, x=x, y=y)
    return path




@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: extra threads only cost time on a shared machine (hundreds of
    times more on busy cores). Modules ask for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def cost_model_cache(tmp_path_factory):
    """Host cost models fitted during the tests are cached in the session's temporary folder, not in the user's
    ~/.cache (costmodel/host.py); runs in subprocesses inherit the variable. EDGE_COMPRESS_TEST_CACHE_DIR names a
    folder to share between sessions instead (.ci/run: its two passes fit once)."""
    import os

    before = os.environ.get("EDGE_COMPRESS_CACHE_DIR")
    os.environ["EDGE_COMPRESS_CACHE_DIR"] = (os.environ.get("EDGE_COMPRESS_TEST_CACHE_DIR")
                                             or str(tmp_path_factory.mktemp("edge-compress-cache")))
    yield Path(os.environ["EDGE_COMPRESS_CACHE_DIR"])
    if before is None:
        os.environ.pop("EDGE_COMPRESS_CACHE_DIR", None)
    else:
        os.environ["EDGE_COMPRESS_CACHE_DIR"] = before
