"""Imports every network family module so their ``@register_network`` decorators run."""

from . import unet  # noqa: F401
from . import segnet  # noqa: F401
from . import deeplab  # noqa: F401
from . import unet_encoder  # noqa: F401
from . import z2c  # noqa: F401
