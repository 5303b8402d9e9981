"""Channel-importance criteria: the interface (base.py), one registry and factory (registry.py), the
Torch-Pruning baselines (baselines.py), the information criteria (information/, one file per family),
what `--criterion auto` means (defaults.py) and per-layer keep fractions (allocation.py).

Importing the package registers the product's criteria; plugins register theirs through
registry.register_criterion.
"""
from . import baselines, information  # noqa: F401 - registers the product's criteria
