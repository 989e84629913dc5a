"""Tiny random-initialised models and volumes shared by the blockwise / distributed tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.model_files import save_model
from engine.networks import build
from engine.normalization import Normalization
from engine.synthetic import blobs

SHAPE = (24, 64, 64)


def random_model(folder: Path, network: str = "unet3d", patch=(16, 32, 32), classes: int = 3, seed: int = 0,
                 **options) -> Path:
    """A model folder with random weights (no training): enough to compare prediction paths."""
    torch.manual_seed(seed)
    net = build(network, in_channels=1, classes=classes, depth=2, filters=4, **options)
    net.eval()
    return save_model(net, folder, patch=tuple(patch), normalization=Normalization("zscore_image"),
                      axes="ZYX", class_names=["background"] + [f"c{i}" for i in range(1, classes)])


def volume(seed: int = 1, shape=SHAPE) -> np.ndarray:
    image, _ = blobs(shape, seed=seed, radius=(3, 6))
    return (np.asarray(image, np.float32) * 1000).astype(np.uint16)


def write_tiff(path: Path, data: np.ndarray, spacing=(2.0, 0.5, 0.5)) -> Path:
    import tifffile

    tifffile.imwrite(path, data, imagej=True, resolution=(1 / spacing[2], 1 / spacing[1]),
                     metadata={"axes": "ZYX", "spacing": spacing[0], "unit": "um"})
    return path


def write_ome_zarr(path: Path, data: np.ndarray, zarr_format: int = 3, spacing=(2.0, 0.5, 0.5)) -> Path:
    """A one-level OME-Zarr image (c, z, y, x) written by ome-zarr."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV05() if zarr_format == 3 else FormatV04()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_image(data[None], group, axes=[{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"} for n in "zyx"],
                fmt=fmt, scale=dict(zip("czyx", (1.0, *spacing))), axes_units={n: "micrometer" for n in "zyx"},
                scale_factors=[], storage_options={"chunks": (1, 8, 32, 32)})
    return path


def near_ties(probabilities: np.ndarray, tolerance: float = 1e-5) -> np.ndarray:
    """Voxels whose two largest class probabilities differ by less than ``tolerance``."""
    top = np.sort(probabilities, axis=0)
    return (top[-1] - top[-2]) < tolerance
