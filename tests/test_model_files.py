"""Model folders: round trip, verification of weights, incompatible versions, atomic writes."""

import json

import pytest
import torch

from engine.errors import ModelFileError
from engine.model_files import load_model, model_config, save_model
from engine.networks import build
from engine.normalization import Normalization


def _net():
    torch.manual_seed(0)
    return build("unet2d", in_channels=2, classes=3, depth=2, filters=4).eval()


def _save(tmp_path, name="m"):
    net = _net()
    path = save_model(net, tmp_path / name, patch=(32, 32), axes="CYX", class_names=["bg", "a", "b"],
                      normalization=Normalization("zscore", mean=[1.0, 2.0], std=[3.0, 4.0]))
    return net, path


def test_round_trip_rebuilds_from_the_folder_alone(tmp_path):
    net, path = _save(tmp_path)
    loaded = load_model(path, device="cpu")
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), loaded.network(x), rtol=0, atol=0)
    assert loaded.class_names == ["bg", "a", "b"] and loaded.patch == (32, 32)
    assert loaded.normalization.mean == [1.0, 2.0]
    info = loaded.describe()
    assert info["network"] == "unet2d" and info["parameters"] == sum(p.numel() for p in net.parameters())


def test_tampered_weights_are_refused(tmp_path):
    _, path = _save(tmp_path)
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the checksum"):
        load_model(path)


def test_newer_format_and_foreign_folders_are_refused(tmp_path):
    _, path = _save(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="format_version 99"):
        load_model(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="has no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path):
    _, path = _save(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["network_options"]["filters"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="do not fit network"):
        load_model(path)


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, "never")
    assert list(tmp_path.iterdir()) == []


def test_weights_contain_no_pickle(tmp_path):
    _, path = _save(tmp_path)
    header = (path / "weights.safetensors").read_bytes()[:8]
    assert int.from_bytes(header, "little") > 0  # safetensors: 8-byte header length, then JSON
    assert (path / "weights.safetensors").read_bytes()[8:9] == b"{"


def test_model_config_checks_class_names():
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        model_config(_net(), patch=(8, 8), normalization=Normalization("none"), axes="YX", class_names=["a", "b"])
