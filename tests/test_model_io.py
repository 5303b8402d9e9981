"""Model loading and the pruned-model format, on real files written into tmp_path.

Every bad input must give a ModelLoadError/InputError with a one-line message that names the file (or
the --arch spec) and says what to do instead."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
import torch
import torch.nn as nn

from edge_compress.compress.search.removal import prune_to
from edge_compress.compress.archs import get_arch
from edge_compress.compress.criteria.registry import make_criterion
from edge_compress.compress.errors import InputError, ModelLoadError
from edge_compress.compress.model_io import (
    PRUNED_FORMAT,
    LoadedModel,
    load_model,
    load_pruned,
    rebuild_pruned,
    save_pruned_bytes,
)
from edge_compress.compress.pruning.pruner import ChannelPruner
from helpers_units import REPO, forget_module, one_line, randomise_bn


def _tiny(width: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_bn(get_arch("example-cnn").factory(width=width), seed).eval()


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _load_error(path, **kw) -> str:
    with pytest.raises(ModelLoadError) as exc:
        load_model(path, **kw)
    return one_line(str(exc.value))


# ---- bad files ----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    msg = _load_error(path)
    assert str(path) in msg and "does not exist" in msg and "pass the path" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    msg = _load_error(path)
    assert str(path) in msg and "empty" in msg and "torch.save" in msg


def test_folder(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    msg = _load_error(folder)
    assert str(folder) in msg and "folder" in msg and "model file itself" in msg


def test_random_bytes_are_not_a_torch_file(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    msg = _load_error(path)
    assert str(path) in msg and "not a PyTorch file" in msg and "torch.save" in msg
    # it must not be mistaken for a pickled module that only needs --trust-model
    assert "--trust-model" not in msg
    assert str(path) in _load_error(path, trust_model=True)


# "c" is pickle's GLOBAL opcode and "(" its MARK: text starting so must not pass for a pickled module.
@pytest.mark.parametrize("text", ["hello world\nthis is not a model\n", '{"weights": [1, 2, 3]}',
                                  "conv1.weight,0.1,0.2\nconv1.bias,0.3\n", "(1, 2, 3)\n"])
def test_text_file_is_not_a_torch_file(tmp_path, text):
    path = tmp_path / "weights.pth"
    path.write_text(text)
    msg = _load_error(path)
    assert str(path) in msg and "not a PyTorch file" in msg and "torch.save" in msg
    assert "--trust-model" not in msg
    assert "not a PyTorch file" in _load_error(path, trust_model=True)  # nothing gets unpickled


def test_truncated_torch_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(_tiny().state_dict(), good)
    data = good.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(path, arch="example-cnn", arch_kwargs={"width": 4})
    assert str(path) in msg and ("truncated" in msg or "corrupt" in msg)
    assert "re-save" in msg or "torch.save" in msg


def test_file_holding_something_else(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    msg = _load_error(path, arch="example-cnn")
    assert str(path) in msg and "not a state dict" in msg and "state_dict()" in msg


# ---- state dicts and the architecture ------------------------------------------------------------

def test_state_dict_without_arch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny().state_dict(), path)
    msg = _load_error(path)
    assert str(path) in msg and "--arch" in msg and "example-cnn" in msg and "resnet20" in msg


def test_state_dict_with_arch_loads_exactly(tmp_path):
    model = _tiny(width=4)
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(path, arch="example-cnn", arch_kwargs={"width": 4})
    assert isinstance(loaded, LoadedModel)
    assert loaded.kind == "state_dict" and loaded.prunable and loaded.arch == "example-cnn"
    assert loaded.arch_kwargs == {"width": 4} and loaded.arch_info is get_arch("example-cnn")
    assert not loaded.module.training
    torch.testing.assert_close(_out(loaded.module, X), _out(model, X))


def test_unknown_builtin_arch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny().state_dict(), path)
    with pytest.raises(InputError) as exc:
        load_model(path, arch="resnet19")
    msg = one_line(str(exc.value))
    assert "'resnet19'" in msg and "resnet20" in msg and "package.module:callable" in msg


def test_arch_module_that_does_not_import(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny().state_dict(), path)
    with pytest.raises(InputError) as exc:
        load_model(path, arch="no_such_package_xyz.nets:build")
    msg = one_line(str(exc.value))
    assert "no_such_package_xyz" in msg and "cannot import" in msg and "PYTHONPATH" in msg


def test_arch_attribute_that_does_not_exist(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny().state_dict(), path)
    with pytest.raises(InputError) as exc:
        load_model(path, arch="edge_compress.compress.archs.resnet_cifar:resnet99")
    msg = one_line(str(exc.value))
    assert "edge_compress.compress.archs.resnet_cifar" in msg and "'resnet99'" in msg and "no attribute" in msg


def test_keys_that_do_not_match(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny().state_dict(), path)
    msg = _load_error(path, arch="resnet20")
    assert str(path) in msg and "does not match --arch resnet20" in msg
    # the first mismatches are named, both ways
    assert "missing" in msg and "conv1.weight" in msg
    assert "unexpected" in msg and "features.0.weight" in msg
    assert "--arch-kwargs" in msg


def test_shapes_that_do_not_match(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny(width=4).state_dict(), path)
    msg = _load_error(path, arch="example-cnn", arch_kwargs={"width": 12})
    assert "shape mismatch" in msg and "features.0.weight (4, 3, 3, 3) vs (12, 3, 3, 3)" in msg


def test_checkpoint_dict_with_dataparallel_prefix(tmp_path):
    model = _tiny()
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "epoch": 3, "best_prec1": 71.5}, path)
    loaded = load_model(path, arch="example-cnn", arch_kwargs={"width": 4})
    assert loaded.kind == "state_dict"
    torch.testing.assert_close(_out(loaded.module, X), _out(model, X))


def test_checkpoint_without_batchnorm_counters_loads(tmp_path):
    # Old checkpoints (PyTorch < 0.4.1, e.g. the shared ResNets) have no num_batches_tracked.
    model = _tiny()
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pt"
    torch.save({"model": sd}, path)
    loaded = load_model(path, arch="example-cnn", arch_kwargs={"width": 4})
    torch.testing.assert_close(_out(loaded.module, X), _out(model, X))


# ---- pickled modules and TorchScript -------------------------------------------------------------

def test_pickled_module_needs_trust(tmp_path):
    model = _tiny()
    path = tmp_path / "full.pt"
    torch.save(model, path)
    msg = _load_error(path)
    assert str(path) in msg and "--trust-model" in msg and "state_dict()" in msg
    loaded = load_model(path, trust_model=True)
    assert loaded.kind == "pickled-module" and loaded.prunable
    torch.testing.assert_close(_out(loaded.module, X), _out(model, X))


def test_torchscript_loads_for_export_only(tmp_path):
    model = _tiny()
    path = tmp_path / "scripted.pt"
    torch.jit.trace(model, X).save(str(path))
    loaded = load_model(path)
    assert loaded.kind == "torchscript" and loaded.prunable is False
    assert loaded.arch is None and loaded.arch_info is None
    assert torch.allclose(_out(loaded.module, X), _out(model, X), atol=1e-6)


# ---- package.module:callable architectures -------------------------------------------------------

USER_MODULE = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, width, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))

def build(width=4, num_classes=10):
    return Net(width, num_classes)

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / "src" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield name
    forget_module(name)


def test_user_callable_arch_with_kwargs(tmp_path, user_package):
    import importlib

    spec = f"{user_package}.nets:build"
    torch.manual_seed(0)
    model = randomise_bn(importlib.import_module(f"{user_package}.nets").build(width=6, num_classes=5)).eval()
    path = tmp_path / "user.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(path, arch=spec, arch_kwargs={"width": 6, "num_classes": 5})
    assert loaded.kind == "state_dict" and loaded.arch == spec and loaded.arch_info is None
    assert loaded.arch_kwargs == {"width": 6, "num_classes": 5}
    torch.testing.assert_close(_out(loaded.module, X), _out(model, X))
    # Without the kwargs the shapes differ, and the message says so.
    msg = _load_error(path, arch=spec)
    assert "shape mismatch" in msg and "body.0.weight (6, 3, 3, 3) vs (4, 3, 3, 3)" in msg


def test_user_callable_arch_bad_kwargs_and_not_callable(tmp_path, user_package):
    path = tmp_path / "user.pt"
    torch.save(_tiny().state_dict(), path)
    with pytest.raises(InputError) as exc:
        load_model(path, arch=f"{user_package}.nets:build", arch_kwargs={"depth": 3})
    msg = one_line(str(exc.value))
    assert "--arch-kwargs" in msg and json.dumps({"depth": 3}) in msg and "depth" in msg
    with pytest.raises(InputError) as exc:
        load_model(path, arch=f"{user_package}.nets:NOT_CALLABLE")
    assert "not callable" in one_line(str(exc.value))


# ---- pruned models -------------------------------------------------------------------------------

def _pruned(arch: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    model = randomise_bn(get_arch(arch).factory(**kwargs)).eval()
    pruner_crit = make_criterion("l1")
    pruner = ChannelPruner(model, torch.randn(1, 3, 32, 32), channel_multiple=4, min_channels=4)
    assert prune_to(pruner, pruner_crit, 0.5) > 0
    return model


@pytest.fixture(scope="module")
def pruned_models():
    return {"resnet20": ({}, _pruned("resnet20", {})),
            "mobilenetv2": ({"width_mult": 0.25}, _pruned("mobilenetv2", {"width_mult": 0.25}))}


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_pruned_round_trip(tmp_path, pruned_models, arch):
    kwargs, model = pruned_models[arch]
    fresh = get_arch(arch).factory(**kwargs)
    n_fresh = sum(p.numel() for p in fresh.parameters())
    n_pruned = sum(p.numel() for p in model.parameters())
    assert n_pruned < n_fresh  # really pruned

    data = save_pruned_bytes(model, arch, kwargs, extra={"keep": 0.5})
    path = tmp_path / "model.pruned.pt"
    path.write_bytes(data)

    reloaded = load_pruned(path)
    assert not reloaded.training
    assert sum(p.numel() for p in reloaded.parameters()) == n_pruned
    torch.testing.assert_close(_out(reloaded, X), _out(model, X))
    for (name, a), (name_b, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name

    loaded = load_model(path)  # the general loader recognises the format, no --arch needed
    assert loaded.kind == "pruned" and loaded.arch == arch and loaded.arch_kwargs == kwargs
    assert loaded.arch_info is get_arch(arch)
    torch.testing.assert_close(_out(loaded.module, X), _out(model, X))

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["format"] == PRUNED_FORMAT and ckpt["info"] == {"keep": 0.5}
    torch.testing.assert_close(_out(rebuild_pruned(ckpt)[0], X), _out(model, X))


def test_pruned_model_reloads_without_pruning_code(tmp_path, pruned_models):
    kwargs, model = pruned_models["resnet20"]
    path = tmp_path / "model.pruned.pt"
    path.write_bytes(save_pruned_bytes(model, "resnet20", kwargs))
    x_path, y_path = tmp_path / "x.pt", tmp_path / "y.pt"
    torch.save(X, x_path)
    code = textwrap.dedent(f"""
        import sys, torch
        from edge_compress.compress import load_pruned
        m = load_pruned({str(path)!r})
        with torch.no_grad():
            torch.save(m(torch.load({str(x_path)!r})), {str(y_path)!r})
        print("LOADED_TP=" + str("torch_pruning" in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED_TP=False" in proc.stdout, proc.stdout
    torch.testing.assert_close(torch.load(y_path), _out(model, X))


def test_load_pruned_refuses_other_files(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_tiny().state_dict(), path)
    with pytest.raises(ModelLoadError) as exc:
        load_pruned(path)
    msg = one_line(str(exc.value))
    assert str(path) in msg and "not a pruned model" in msg


def test_pruned_checkpoint_for_another_arch_is_refused(tmp_path, pruned_models):
    kwargs, model = pruned_models["resnet20"]
    ckpt = torch.load(io.BytesIO(save_pruned_bytes(model, "resnet20", kwargs)), weights_only=True)
    ckpt["arch"] = "example-cnn"
    with pytest.raises(ModelLoadError) as exc:
        rebuild_pruned(ckpt, tmp_path / "x.pt")
    msg = one_line(str(exc.value))
    assert "does not exist in --arch example-cnn" in msg
