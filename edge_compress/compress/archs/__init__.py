"""Reference architectures: importing this package registers them."""
from . import (  # noqa: F401  (registration)
    convnext_imagenet,
    deeplabv3,
    densenet_imagenet,
    efficientnet_imagenet,
    example_cnn,
    mobilenetv2_cifar,
    mobilenetv2_imagenet,
    mobilenetv3_imagenet,
    regnet_imagenet,
    resnet_cifar,
    resnet_imagenet,
    shufflenet_imagenet,
    squeezenet_imagenet,
    unet,
    vgg_cifar,
    vgg_imagenet,
    yolo_detector,
)
from .registry import IMAGENET_MEAN, IMAGENET_STD, TASKS, ArchInfo, arch_names, get_arch, register_arch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TASKS", "ArchInfo", "arch_names", "get_arch", "register_arch"]
