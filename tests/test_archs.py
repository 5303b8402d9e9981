"""The architecture registry: contract tests over every entry, registry errors, and the pretrained
CIFAR ResNets of ../shared (strict key matching, documented accuracy on CIFAR-10 JPEG images)."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn

from edge_compress.compress.archs import TASKS, ArchInfo, arch_names, get_arch, register_arch
from edge_compress.compress.archs.resnet_cifar import PadShortcut
from edge_compress.compress.model_io import load_model
from helpers_units import RESNET20_FILE, RESNET56_FILE, cifar_test_images, need_shared

EXPECTED = {"example-cnn", "mobilenetv2", "resnet20", "resnet32", "resnet44", "resnet56", "vgg16_bn",
            "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
            "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "densenet121",
            "convnext_tiny", "convnext_pico", "yolov8n", "unet", "deeplabv3_resnet50", "deeplabv3_resnet18"}


def test_registry_holds_the_reference_architectures():
    assert set(arch_names()) >= EXPECTED
    assert arch_names() == sorted(arch_names())


# ---- contract tests, generated from the registry ------------------------------------------------

def _as_list(y) -> list[torch.Tensor]:
    return list(y.values()) if isinstance(y, dict) else list(y) if isinstance(y, (tuple, list)) else [y]


@pytest.mark.parametrize("name", arch_names())
def test_every_arch_builds_and_runs(name):
    """At the contract size (tests/test_zoo_models.py checks the shapes per task)."""
    info = get_arch(name)
    torch.manual_seed(0)
    model = info.factory(**{**info.default_kwargs, **info.contract_kwargs}).eval()
    assert isinstance(model, nn.Module)
    x = torch.randn(2, *info.contract_input_shape)
    with torch.no_grad():
        outputs = _as_list(model(x))
    for y in outputs:
        assert y.shape[0] == 2 and torch.isfinite(y).all()
    # The two samples give different outputs: the model looks at its input. (Untrained deep detectors with
    # default init and BatchNorm at unit statistics flatten the signal: one of their maps is enough.)
    assert any(not torch.equal(y[0], y[1]) for y in outputs)


@pytest.mark.parametrize("name", arch_names())
def test_every_arch_metadata_is_consistent(name):
    info = get_arch(name)
    assert isinstance(info, ArchInfo)
    assert info.name == name
    assert callable(info.factory)
    c, h, w = info.input_shape
    assert all(isinstance(v, int) and v > 0 for v in (c, h, w))
    assert len(info.mean) == c and len(info.std) == c
    assert all(0.0 <= m <= 1.0 for m in info.mean)
    assert all(s > 0 for s in info.std)
    assert isinstance(info.num_classes, int) and info.num_classes > 1
    assert info.description.strip() and "\n" not in info.description
    assert isinstance(info.default_kwargs, dict) and isinstance(info.contract_kwargs, dict)
    assert info.task in TASKS and len(info.contract_input_shape) == 3
    # The factory's own default for num_classes agrees with the metadata, and it can be overridden.
    params = inspect.signature(info.factory).parameters
    assert "num_classes" in params and params["num_classes"].default == info.num_classes
    assert set(info.contract_kwargs) <= set(params)
    model = info.factory(**{**info.default_kwargs, **info.contract_kwargs, "num_classes": 3}).eval()
    with torch.no_grad():
        y = _as_list(model(torch.randn(1, *info.contract_input_shape)))
    # the class dimension follows num_classes (a detector's maps carry 4 x 16 box bins before the classes)
    assert all(t.shape[1] == (3 if info.task != "detection" else 64 + 3) for t in y)


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task 'pose'"):
        register_arch("pose-net", task="pose")


def test_arch_info_is_immutable():
    info = get_arch("resnet20")
    with pytest.raises(Exception):
        info.num_classes = 100  # type: ignore[misc]


# ---- registry errors ----------------------------------------------------------------------------

def test_unknown_name_lists_the_known_names():
    with pytest.raises(KeyError) as exc:
        get_arch("resnet19")
    msg = exc.value.args[0]
    assert "'resnet19'" in msg
    for name in arch_names():
        assert name in msg


def test_duplicate_registration_raises_and_keeps_the_original():
    before = get_arch("resnet20")
    names = arch_names()
    with pytest.raises(ValueError) as exc:
        register_arch("resnet20")(lambda num_classes=10: nn.Linear(3, num_classes))
    msg = str(exc.value)
    assert "resnet20" in msg and "twice" in msg
    for name in names:
        assert name in msg
    assert get_arch("resnet20") is before
    assert arch_names() == names


# ---- ResNet structure (option A) ----------------------------------------------------------------

@pytest.mark.parametrize("name,blocks", [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9)])
def test_cifar_resnet_depth_and_option_a_shortcuts(name, blocks):
    model = get_arch(name).factory()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == int(name.removeprefix("resnet"))  # convs + the linear layer
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert [p.pad for p in pads] == [8, 16]  # first block of layer2 (32 // 4) and of layer3 (64 // 4)
    for i in (1, 2, 3):
        assert len(getattr(model, f"layer{i}")) == blocks
    # option A has no shortcut parameters: every parameter lives in conv/bn/linear layers
    assert not any(p for m in pads for p in m.parameters())


def test_pad_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 8)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0


# ---- pretrained models of ../shared -------------------------------------------------------------

@pytest.mark.parametrize("arch,path", [("resnet20", RESNET20_FILE), ("resnet56", RESNET56_FILE)])
def test_pretrained_resnet_loads_with_strict_keys(arch, path):
    need_shared(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert raw and all(k.startswith("module.") for k in raw)
    loaded = load_model(path, arch=arch)
    assert loaded.kind == "state_dict" and loaded.arch == arch and loaded.arch_info is get_arch(arch)
    own = loaded.module.state_dict()
    stripped = {k.removeprefix("module."): v for k, v in raw.items()}
    # Every tensor of the file is used, and every weight of the model comes from the file.
    assert set(stripped) <= set(own)
    assert {k for k in own if not k.endswith("num_batches_tracked")} == set(stripped)
    for k, v in stripped.items():
        assert torch.equal(own[k], v), k
    assert not loaded.module.training


def test_pretrained_resnet20_reaches_documented_accuracy_on_jpeg_cifar10():
    need_shared(RESNET20_FILE)
    x, y = cifar_test_images(1000)
    model = load_model(RESNET20_FILE, arch="resnet20").module
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 250]).argmax(1) for i in range(0, len(x), 250)]).numpy()
    acc = float((pred == y).mean())
    # README: 81.03 % on the full JPEG test set; 1000 samples have a standard error of about 1.2 points.
    assert acc > 0.75, f"ResNet-20 top-1 {acc:.1%} on 1000 JPEG test images, README says 81.03 %"
    # And the same weights in a freshly initialised model are at chance: the weights matter.
    torch.manual_seed(0)
    fresh = get_arch("resnet20").factory().eval()
    with torch.no_grad():
        fresh_acc = float((fresh(x[:250]).argmax(1).numpy() == y[:250]).mean())
    assert fresh_acc < 0.3
