"""Segmentation networks: a registry of 2D/3D U-Nets and friends.

>>> from engine import networks
>>> "unet2d" in networks.list_networks()
True
"""

from .base import SegmentationNetwork
from .registry import NetworkSpec, build, get_spec, list_networks, register_network

__all__ = ["SegmentationNetwork", "NetworkSpec", "build", "get_spec", "list_networks", "register_network"]
