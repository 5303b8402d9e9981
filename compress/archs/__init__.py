"""Reference architectures: importing this package registers them."""
from . import example_cnn, mobilenetv2_cifar, resnet_cifar, resnet_imagenet, vgg_cifar  # noqa: F401  (registration)
from .registry import ArchInfo, arch_names, get_arch, register_arch

__all__ = ["ArchInfo", "arch_names", "get_arch", "register_arch"]
