"""Exceptions and warnings raised by the deploy package.

User errors (a provider this machine lacks, a bad TensorRT version) are ``DeployError``s with a
one-line message the CLI can print as is; programming errors keep the built-in types.
"""

from __future__ import annotations


class DeployError(Exception):
    """Base class for deployment failures a user can act on."""


class ProviderError(DeployError):
    """The requested ONNX Runtime execution provider cannot run on this machine."""


class DeviceError(DeployError):
    """The device cannot be reached, does not trust us, or lacks a tool: the user's to fix."""


class RunnerStateError(DeployError, RuntimeError):
    """A runner was used in the wrong state (e.g. ``infer`` before ``activate``)."""


class ProviderFallbackWarning(UserWarning):
    """A runner ran on another execution provider than the one asked for.

    A distinct category so that a pipeline can turn it into an error
    (``warnings.simplefilter("error", ProviderFallbackWarning)``) without touching other warnings.
    """
