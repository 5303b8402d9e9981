"""The information criteria, one file per family; importing the package registers them."""
from . import capacity, cmi, consumer_mi, mi_gradient, mipp  # noqa: F401 - registers the criteria
