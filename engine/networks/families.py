"""Imports every network family module so their ``@register_network`` decorators run."""

from . import unet  # noqa: F401
