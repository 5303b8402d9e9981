"""Device profiles: one YAML file per target device, loaded into strict, frozen pydantic models.

    from edge_compress.device_profiles import load_profile
    profile = load_profile("jetson-nano")          # or a path to your own YAML file
    profile.runtime.opset, profile.hardware.fp16_gflops.value

A user file may start with `extends: <built-in name>` and give only the keys it changes.
This package imports nothing of the rest of the project but its config base (edge_compress.config_base).
"""

from .loader import list_profiles, load_profile, profile_names
from .schema import (
    CONFIDENCES,
    ENGINES,
    METHODS,
    PRECISIONS,
    SCHEMA_VERSION,
    Budget,
    CostModel,
    DeviceProfile,
    Fact,
    Hardware,
    Measurement,
    ProfileError,
    Pruning,
    Runtime,
    SshTarget,
)

__all__ = [
    "load_profile", "list_profiles", "profile_names", "ProfileError",
    "DeviceProfile", "Fact", "Hardware", "Runtime", "Pruning", "Budget", "Measurement",
    "SshTarget", "CostModel",
    "CONFIDENCES", "ENGINES", "METHODS", "PRECISIONS", "SCHEMA_VERSION",
]
