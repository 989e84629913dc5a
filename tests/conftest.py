"""Shared fixtures: tiny synthetic data and a tiny trained model (trained once per session)."""

from __future__ import annotations

import pytest
import torch
import xarray as xr

from engine.synthetic import blobs

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_UNET = {"depth": 2, "filters": 4}


def blob_images(count: int, shape=(48, 48), seed: int = 0, radius=(3, 6)):
    images, labels = [], []
    for i in range(count):
        image, label = blobs(shape, seed=seed + i, radius=radius)
        dims = ("row", "col") if len(shape) == 2 else ("pln", "row", "col")
        images.append(xr.DataArray(image, dims=dims, name=f"blobs{i}",
                                   attrs={"spacing": dict(zip(dims, [0.5] * len(dims))), "unit": "um"}))
        labels.append(label)
    return images, labels


@pytest.fixture(scope="session", autouse=True)
def plugin_cache(tmp_path_factory):
    """One cache folder for deepseg's plugin jar, set before the first test: this process's ImageJ and every
    subprocess a test starts (they inherit the environment) build and use the same jar, whatever the order."""
    import os

    folder = os.environ.setdefault("DEEPSEG_CACHE_DIR", str(tmp_path_factory.mktemp("deepseg-cache")))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2D U-Net trained for two short epochs; returns (model folder, TrainResult)."""
    from engine.training import train

    images, labels = blob_images(3)
    out = tmp_path_factory.mktemp("models") / "tiny"
    result = train(images=images, labels=labels, out=str(out), network="unet2d", network_options=TINY_UNET,
                   patch=32, epochs=2, batch=2, steps_per_epoch=3, seed=5)
    return out, result
