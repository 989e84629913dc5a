"""The deepseg command line end to end on real files: train, info, predict, evaluate, errors."""

import json

import numpy as np
import pytest

from conftest import blob_images
from engine.cli import main
from engine.io import read_image, write_image, write_labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    images, labels = blob_images(4, shape=(48, 48), seed=50)
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "train" if i < 3 else "test"
        write_image(root / split / "Images" / f"img{i}.tif", image)
        write_labels(root / split / "Labels" / f"img{i}.tif", label, template=image)
    return root


@pytest.fixture(scope="module")
def trained(dataset):
    model = dataset / "model"
    config = dataset / "options.json"
    config.write_text(json.dumps({"network_options": {"depth": 2, "filters": 4}, "batch": 2}))
    code = main(["train", "--images", str(dataset / "train"), "--network", "unet2d", "--patch", "32",
                 "--epochs", "2", "--steps", "2", "--config", str(config), "--class-names", "bg,blob",
                 "--out", str(model), "--quiet"])
    assert code == 0
    return model


def test_train_writes_the_resolved_configuration(trained):
    saved = json.loads((trained / "train_config.json").read_text())
    assert saved["network_options"] == {"depth": 2, "filters": 4} and saved["batch"] == 2 and saved["epochs"] == 2
    assert saved["class_names"] == ["bg", "blob"]


def test_info(trained, capsys):
    assert main(["info", str(trained)]) == 0
    text = capsys.readouterr().out
    assert "unet2d" in text and "bg, blob" in text and "parameters" in text and "receptive" in text
    assert main(["info", str(trained), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == 2 and info["parameters"] > 0 and info["training"]["epochs"] == 2
    assert all(r > 1 for r in info["receptive_field"])


def test_predict_then_evaluate(trained, dataset, tmp_path, capsys):
    image = dataset / "test" / "Images" / "img3.tif"
    labels, probs = tmp_path / "labels.tif", tmp_path / "probs.tif"
    assert main(["predict", str(trained), str(image), "--out", str(labels), "--probabilities", str(probs),
                 "--tile", "32", "--overlap", "0.5", "--quiet"]) == 0
    result = read_image(labels)
    assert result.shape == (48, 48) and result.dtype == np.uint8
    assert read_image(probs).sizes["ch"] == 2
    report = tmp_path / "report.json"
    assert main(["evaluate", "--prediction", str(labels), "--truth", str(dataset / "test" / "Labels" / "img3.tif"),
                 "--json", str(report), "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "cm.png")]) == 0
    assert "dice" in capsys.readouterr().out.lower()
    data = json.loads(report.read_text())
    assert 0.0 <= data["global_accuracy"] <= 1.0
    assert (tmp_path / "r.csv").stat().st_size > 0 and (tmp_path / "cm.png").stat().st_size > 0


def test_predict_a_folder(trained, dataset, tmp_path):
    assert main(["predict", str(trained), str(dataset / "train" / "Images"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.tif", "img1.tif", "img2.tif"]


def test_networks_lists_the_registry(capsys):
    assert main(["networks"]) == 0
    text = capsys.readouterr().out
    for name in ("unet2d", "unet3d", "unet3d_aniso", "deeplabv3plus", "segnet2d"):
        assert name in text


@pytest.mark.parametrize("argv, message", [
    (["train", "--images", "/nonexistent", "--labels", "/nonexistent"], "do not exist"),
    (["train", "--network", "unet4d", "--images", "."], "unknown network 'unet4d'"),
    (["info", "/nonexistent/model"], "does not exist"),
    (["evaluate", "--prediction", "/nonexistent.tif", "--truth", "/nonexistent.tif"], "does not exist"),
])
def test_errors_are_one_clear_line(argv, message, capsys, tmp_path, dataset):
    if argv[0] == "train" and "unet4d" in argv:
        argv = argv[:-1] + [str(dataset / "train"), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepseg: error:") and message in err


def test_unreadable_file_is_named(tmp_path, trained, capsys):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not an image")
    assert main(["predict", str(trained), str(junk), "--out", str(tmp_path / "x.tif"), "--quiet"]) == 2
    assert "junk.tif" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()
