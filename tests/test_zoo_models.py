"""The zoo's models against their published references: parameter counts, torchvision's state-dict key names (so a
torchvision checkpoint loads with `--arch NAME`), and forward shapes per task.

Parameter counts are torchvision's, from the "Params" column of its model documentation
(https://pytorch.org/vision/stable/models.html, the weights tables of each builder, e.g.
MobileNet_V3_Small_Weights.IMAGENET1K_V1: 2,542,856). torchvision does not install here (its wheels need CUDA
torch), so each model's key names are checked against a structural rule torchvision's layout follows, a few
exact keys from its checkpoints, and the count of tensors.
"""
from __future__ import annotations

import pytest
import torch

from edge_compress.compress.archs import TASKS, arch_names, get_arch

# torchvision documentation, "Params" column (and ultralytics' model summary for YOLOv8-n).
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032,
    "efficientnet_b0": 5_288_548, "regnet_x_400mf": 5_495_976, "regnet_y_400mf": 4_344_144,
    "shufflenet_v2_x1_0": 2_278_604, "squeezenet1_1": 1_235_496, "densenet121": 7_978_856,
    "convnext_tiny": 28_589_128, "vgg13": 133_047_848,
}
# DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1: 42,004,074 with the auxiliary FCN head.
DEEPLABV3_RESNET50_WITH_AUX = 42_004_074
# ultralytics' yolov8n summary: 3,157,200 parameters, 16 of them the fixed DFL conv (decoding, not in this model).
YOLOV8N_WITHOUT_DFL = 3_157_200 - 16

# Exact keys of torchvision's checkpoints (and their tensor counts in the state dict, buffers included).
TORCHVISION_KEYS = {
    "mobilenet_v3_small": ["features.0.0.weight", "features.1.block.1.fc1.weight", "features.4.block.2.fc2.bias",
                           "features.12.0.weight", "classifier.0.weight", "classifier.3.bias"],
    "mobilenet_v3_large": ["features.2.block.0.0.weight", "features.4.block.2.fc1.weight", "features.16.1.running_var",
                           "classifier.3.weight"],
    "efficientnet_b0": ["features.0.0.weight", "features.1.0.block.0.0.weight", "features.1.0.block.1.fc1.weight",
                        "features.2.0.block.3.1.running_mean", "features.8.0.weight", "classifier.1.weight"],
    "regnet_x_400mf": ["stem.0.weight", "trunk_output.block1.block1-0.proj.0.weight",
                       "trunk_output.block1.block1-0.f.b.0.weight", "trunk_output.block4.block4-0.f.c.1.bias",
                       "fc.weight"],
    "regnet_y_400mf": ["trunk_output.block1.block1-0.f.se.fc1.weight", "trunk_output.block3.block3-5.f.se.fc2.bias",
                       "fc.bias"],
    "squeezenet1_1": ["features.0.weight", "features.3.squeeze.weight", "features.12.expand3x3.bias",
                      "classifier.1.weight"],
    "densenet121": ["features.conv0.weight", "features.denseblock1.denselayer1.norm1.weight",
                    "features.denseblock4.denselayer16.conv2.weight", "features.transition3.conv.weight",
                    "features.norm5.running_var", "classifier.weight"],
    "convnext_tiny": ["features.0.0.weight", "features.0.1.weight", "features.1.0.layer_scale",
                      "features.1.0.block.0.weight", "features.1.0.block.2.weight", "features.1.0.block.3.weight",
                      "features.1.0.block.5.bias", "features.2.0.weight", "features.2.1.weight",
                      "features.7.2.block.5.weight", "classifier.0.weight", "classifier.2.weight"],
    "deeplabv3_resnet50": ["backbone.conv1.weight", "backbone.layer4.2.bn3.running_var",
                           "classifier.0.convs.0.0.weight", "classifier.0.convs.3.1.weight",
                           "classifier.0.convs.4.1.weight", "classifier.0.project.0.weight", "classifier.1.weight",
                           "classifier.4.bias"],
}
# Tensors in torchvision's state dicts (parameters and BatchNorm buffers, num_batches_tracked included).
TORCHVISION_STATE_DICT_LEN = {"squeezenet1_1": 52, "convnext_tiny": 182}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_the_published_one(name):
    assert _params(get_arch(name).factory()) == PUBLISHED_PARAMS[name]


def test_deeplabv3_resnet50_with_its_auxiliary_head_matches_torchvision():
    model = get_arch("deeplabv3_resnet50").factory(aux_loss=True)
    assert _params(model) == DEEPLABV3_RESNET50_WITH_AUX
    keys = model.state_dict().keys()
    assert {"aux_classifier.0.weight", "aux_classifier.1.running_mean", "aux_classifier.4.bias"} <= set(keys)
    assert not any(k.startswith(("backbone.fc", "backbone.avgpool")) for k in keys)


def test_yolov8n_matches_ultralytics_parameter_count():
    assert _params(get_arch("yolov8n").factory()) == YOLOV8N_WITHOUT_DFL


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_torchvision_key_names(name):
    keys = get_arch(name).factory().state_dict().keys()
    missing = [k for k in TORCHVISION_KEYS[name] if k not in keys]
    assert not missing, missing
    if name in TORCHVISION_STATE_DICT_LEN:
        assert len(keys) == TORCHVISION_STATE_DICT_LEN[name]


def test_a_state_dict_round_trips_strictly_between_builds():
    """What `--arch NAME` does with a checkpoint: a strict load into a fresh build."""
    for name in ("mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny"):
        a, b = get_arch(name).factory(), get_arch(name).factory()
        b.load_state_dict(a.state_dict(), strict=True)


@pytest.mark.parametrize("name", arch_names())
def test_forward_shape_follows_the_task(name):
    info = get_arch(name)
    assert info.task in TASKS
    torch.manual_seed(0)
    model = info.factory(**info.contract_kwargs).eval()
    classes = info.contract_kwargs.get("num_classes", info.num_classes)
    c, h, w = info.contract_input_shape
    with torch.no_grad():
        y = model(torch.randn(2, c, h, w))
    if info.task == "classification":
        assert y.shape == (2, classes)
    elif info.task == "segmentation":
        assert y.shape == (2, classes, h, w)
    else:   # detection: three maps at strides 8, 16, 32 of 4 * 16 box bins and the class logits
        assert isinstance(y, tuple) and [t.shape for t in y] == [(2, 64 + classes, h // s, w // s) for s in (8, 16, 32)]


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"])
def test_full_size_forward_at_the_registered_resolution(name):
    info = get_arch(name)
    with torch.no_grad():
        assert info.factory().eval()(torch.randn(1, *info.input_shape)).shape == (1, info.num_classes)


def test_deeplabv3_is_dilated_to_output_stride_8():
    model = get_arch("deeplabv3_resnet50").factory(num_classes=3, width=8, head=16).eval()
    with torch.no_grad():
        assert model.backbone(torch.randn(1, 3, 64, 64))["out"].shape[-2:] == (8, 8)
    assert model.backbone.layer4[1].conv2.dilation == (4, 4) and model.backbone.layer3[0].conv2.dilation == (1, 1)
