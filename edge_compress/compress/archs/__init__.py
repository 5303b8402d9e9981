"""Reference architectures: importing this package registers them."""
from . import (  # noqa: F401  (registration)
    example_cnn,
    mobilenetv2_cifar,
    mobilenetv2_imagenet,
    resnet_cifar,
    resnet_imagenet,
    shufflenet_imagenet,
    vgg_cifar,
    vgg_imagenet,
)
from .registry import ArchInfo, arch_names, get_arch, register_arch

__all__ = ["ArchInfo", "arch_names", "get_arch", "register_arch"]
