"""Model exchange: ONNX export, bioimage.io packages, and `deepseg predict` running both (issue 9, item 4)."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'deepseg[export]'")
pytest.importorskip("bioimageio.spec", reason="needs the export extra: pip install 'deepseg[export]'")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from engine.cli import main  # noqa: E402
from engine.errors import InputError, ModelFileError  # noqa: E402
from engine.export import export_bioimageio, export_onnx, preprocessing, size_rule  # noqa: E402
from engine.io import read_image, read_labels, write_image  # noqa: E402
from engine.model_files import load_model, save_model  # noqa: E402
from engine.networks import build  # noqa: E402
from engine.normalization import Normalization  # noqa: E402
from engine.prediction import predict  # noqa: E402

from conftest import blob_images  # noqa: E402

RANDOM_NETWORKS = {
    "unet2d": ("unet2d", {"depth": 2, "filters": 4}, "YX", [16, 16]),
    "unet2d_valid": ("unet2d", {"depth": 2, "filters": 4, "padding": "valid", "upsample": "linear"}, "YX", [48, 48]),
    "unet3d": ("unet3d", {"depth": 2, "filters": 2}, "ZYX", [8, 16, 16]),
    # pads to its output stride in Python: the export pads with traced shapes instead (sizes 32, 33, ...)
    "deeplab": ("deeplabv3plus", {"aspp_filters": 8, "decoder_filters": 8, "low_level_filters": 4,
                                  "encoder_width": 0.125}, "YX", [64, 64]),
}


def random_model(folder, key: str):
    """A random-initialised (untrained) model folder: enough to compare runtimes."""
    name, options, axes, patch = RANDOM_NETWORKS[key]
    torch.manual_seed(3)
    network = build(name, in_channels=1, classes=3, **options).eval()
    norm = Normalization("zscore", mean=[10.0], std=[2.0])
    return save_model(network, folder / key, patch=patch, normalization=norm, axes=axes,
                      class_names=["background", "cell", "edge"])


@pytest.mark.parametrize("key", sorted(RANDOM_NETWORKS))
def test_onnx_equals_torch_on_several_sizes(tmp_path, key):
    """onnxruntime reproduces torch's softmax within 1e-4 at three accepted sizes, batch 2, one file."""
    folder = random_model(tmp_path, key)
    out = tmp_path / f"{key}.onnx"
    summary = export_onnx(folder, out)
    model = load_model(folder, device="cpu")
    rule = size_rule(model.network)
    assert summary["step"] == list(rule.step) and summary["max_difference"] < 1e-4
    graph = onnx.load(str(out))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False] + [True] * model.network.spatial_dims
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(7)
    for k in (1, 2, 3):  # other sizes than export's own check
        shape = [m + k * s for m, s in zip(rule.minimum, rule.step)]
        x = torch.randn((2, 1, *shape), generator=generator)
        with torch.no_grad():
            expected = torch.softmax(model.network(x), dim=1).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
    if key == "unet2d_valid":
        assert rule.loss == (40, 40) and got.shape[2:] == tuple(n - 40 for n in shape)


def test_onnx_cli_round_trip(tmp_path, tiny_model):
    """deepseg export --format onnx, then deepseg predict model.onnx: the same labels as the model folder."""
    folder, _ = tiny_model
    images, _ = blob_images(1, shape=(70, 90), seed=11)
    image_path = tmp_path / "image.tif"
    write_image(image_path, images[0])
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(folder), "--format", "onnx", "--out", str(onnx_path)]) == 0
    assert main(["predict", str(onnx_path), str(image_path), "--out", str(tmp_path / "labels.tif"), "--quiet"]) == 0
    reference = predict(folder, read_image(image_path), device="cpu", precision="fp32", probabilities=True)
    exported = predict(onnx_path, read_image(image_path), probabilities=True)
    np.testing.assert_array_equal(read_labels(tmp_path / "labels.tif").values, reference.labels.values)
    assert np.abs(exported.probabilities.values - reference.probabilities.values).max() < 1e-4
    info = load_model(onnx_path).describe()
    assert info["kind"] == "onnx" and info["class_names"] == reference.probabilities.coords["ch"].values.tolist()
    assert info["parameters"] > 1000  # graph initializers (batch norm folded into the convolutions)
    assert main(["info", str(onnx_path)]) == 0


def test_onnx_export_refuses_bad_requests(tmp_path, tiny_model, capsys):
    folder, _ = tiny_model
    assert main(["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "model.zip")]) == 2
    assert "ending in .onnx" in capsys.readouterr().err
    assert main(["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--name", "x"]) == 2
    assert not (tmp_path / "m.onnx").exists()
    foreign = tmp_path / "foreign.onnx"  # an ONNX file deepseg did not write: refused by predict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(torch.nn.Conv2d(1, 2, 1), (torch.zeros(1, 1, 4, 4),), str(foreign), dynamo=False)
    with pytest.raises(ModelFileError, match="not exported by deepseg"):
        load_model(foreign)


@pytest.fixture(scope="module")
def package(tmp_path_factory, tiny_model):
    """A bioimage.io package (.zip) of the tiny trained model, with a blob image as sample."""
    folder, _ = tiny_model
    base = tmp_path_factory.mktemp("bioimageio")
    images, _ = blob_images(1, shape=(70, 90), seed=11)
    image_path = base / "image.tif"
    write_image(image_path, images[0])
    out = base / "tiny.zip"
    summary = export_bioimageio(folder, out, sample=image_path, authors=["Test Author"])
    return out, summary, image_path


def test_bioimageio_package_contents(package, tiny_model):
    out, summary, _ = package
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert {"rdf.yaml", "weights.pt", "weights.onnx", "test_input.npy", "test_output.npy", "cover.png",
                "README.md"} <= names
        import ruyaml

        rdf = ruyaml.YAML(typ="safe", pure=True).load(archive.read("rdf.yaml").decode())
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
        assert archive.read("cover.png")[:8] == b"\x89PNG\r\n\x1a\n"
        assert "fixed_zero_mean_unit_variance" in archive.read("README.md").decode()
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert set(rdf["weights"]) == {"torchscript", "onnx"}
    model = load_model(tiny_model[0], device="cpu")
    space = rdf["inputs"][0]["axes"][2:]
    assert [a["id"] for a in space] == ["y", "x"] and all(a["size"] == {"min": 4, "step": 4} for a in space)
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == model.class_names
    steps = rdf["inputs"][0]["preprocessing"]
    assert steps[-1]["kwargs"] == {"mean": model.normalization.mean[0], "std": model.normalization.std[0]}
    assert test_input.shape == (1, 1, 32, 32) and test_output.shape == (1, 2, 32, 32)
    assert test_input.max() > 50  # raw intensities: the rdf's preprocessing normalizes them
    normalized = model.normalization.apply(test_input, channel_axis=1)
    with torch.no_grad():
        expected = torch.softmax(model.network(torch.from_numpy(normalized)), dim=1).numpy()
    assert np.abs(expected - test_output).max() < 1e-5
    assert summary["max_difference"]["onnx"] < 1e-4 and summary["max_difference"]["torchscript"] < 1e-4


def test_bioimageio_package_validates_offline(package):
    """bioimageio.spec format validation with file and hash checks, no internet."""
    import bioimageio.spec as spec

    descr = spec.load_description(package[0], perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status in ("passed", "valid-format")
    assert not [e for d in summary.details for e in d.errors]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load inside bioimageio.core
def test_bioimageio_package_passes_model_test(package):
    """bioimageio.core's test_model (what bioimage.io runs): both weight formats reproduce the test output
    from the test input through the rdf's preprocessing, at several sizes and batch sizes."""
    core = pytest.importorskip("bioimageio.core", reason="the dynamic test needs bioimageio.core")
    assert package[1]["validation"] == "passed"
    assert core.test_model(package[0]).status == "passed"


def test_bioimageio_round_trip_zip_and_folder(package, tiny_model, tmp_path):
    """deepseg predict runs the .zip and the unpacked folder: the same labels as the model folder."""
    out, _, image_path = package
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as archive:
        archive.extractall(unpacked)
    reference = predict(tiny_model[0], read_image(image_path), device="cpu", precision="fp32").labels.values
    for source in (out, unpacked, unpacked / "rdf.yaml"):
        labels = tmp_path / f"labels-{source.name}.tif"
        assert main(["predict", str(source), str(image_path), "--out", str(labels), "--quiet"]) == 0
        np.testing.assert_array_equal(read_labels(labels).values, reference)
    assert load_model(unpacked).kind == "bioimageio"
    weights = unpacked / "weights.onnx"  # a tampered package is refused
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(unpacked)


def test_bioimageio_cli_writes_a_folder(tmp_path, tiny_model, capsys):
    folder, _ = tiny_model
    out = tmp_path / "package"
    assert main(["export", str(folder), "--format", "bioimageio", "--out", str(out), "--name", "tiny blobs"]) == 0
    import importlib.util

    status = "passed" if importlib.util.find_spec("bioimageio.core") else "valid-format"  # spec alone: format only
    assert f"bioimage.io validation {status}" in capsys.readouterr().out
    assert (out / "rdf.yaml").is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    rdf = (out / "rdf.yaml").read_text()
    assert "name: tiny blobs" in rdf and "format: deepseg-exchange" in rdf
    with pytest.raises(InputError, match="not an empty folder"):  # never written over
        export_bioimageio(folder, out)


def test_preprocessing_expresses_deepseg_normalization():
    space = ["y", "x"]
    assert preprocessing(Normalization("none"), 1, space) == [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    image = preprocessing(Normalization("zscore_image"), 2, space)[-1]
    assert image["id"] == "zero_mean_unit_variance" and image["kwargs"]["axes"] == space
    minmax = preprocessing(Normalization("minmax", low=[0.0, 10.0], high=[255.0, 20.0]), 2, space)[-1]
    assert minmax["id"] == "scale_linear" and minmax["kwargs"]["axis"] == "channel"
    np.testing.assert_allclose(minmax["kwargs"]["gain"], [1 / 255, 0.1])
    np.testing.assert_allclose(minmax["kwargs"]["offset"], [0.0, -1.0])
    clip = preprocessing(Normalization("percentile", low=[1.0], high=[9.0], mean=[5.0], std=[2.0]), 1, space)
    assert [s["id"] for s in clip] == ["ensure_dtype", "clip", "fixed_zero_mean_unit_variance"]
    assert clip[1]["kwargs"] == {"min": 1.0, "max": 9.0}
    # different clip bounds per channel: not expressible; the test input is then stored normalized
    assert preprocessing(Normalization("percentile", low=[1.0, 2.0], high=[9.0, 9.0], mean=[5.0, 5.0],
                                       std=[2.0, 2.0]), 2, space) is None
    z2c = preprocessing(Normalization("zscore", mean=[1.0], std=[2.0]), 3, space)[-1]  # 3 slices, 1 channel
    assert z2c["kwargs"] == {"axis": "channel", "mean": [1.0] * 3, "std": [2.0] * 3}
