"""Model exchange: a deepseg model as an ONNX file or a bioimage.io model package (format 0.5).

Both carry the network followed by a softmax: the input is the *normalized* image ``(batch, channels,
*spatial)`` float32, the output the class probabilities ``(batch, classes, *spatial)``. Batch and
spatial axes are dynamic; the accepted spatial sizes are ``minimum + k * step`` per axis (the
network's down-sampling grid), and a valid-padding network returns ``size - loss`` voxels per axis.
The ONNX file stores deepseg's model config (normalization, classes, axes, patch) and that size rule
as JSON in its metadata (key ``deepseg``), so ``deepseg predict model.onnx`` normalizes exactly like
the original model folder.

Every export is checked before it gets its final name: onnxruntime (and the TorchScript copy of a
package) must reproduce the PyTorch probabilities within :data:`TOLERANCE` on random input of three
accepted sizes, and a package must pass bioimage.io validation offline (:func:`validate_package`:
``bioimageio.core``'s model test where installed, else ``bioimageio.spec``'s format and file checks).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import DeepSegError, InputError, ModelFileError
from .fileutil import atomic_path
from .model_files import LoadedModel, load_model

OPSET = 17
TOLERANCE = 1e-4
METADATA_KEY = "deepseg"
EXCHANGE_FORMAT = "deepseg-exchange"
#: deepseg's spatial dims and the bioimage.io axis ids they become
AXIS_IDS = {"pln": "z", "row": "y", "col": "x"}
_UNITS = {"um": "micrometer", "µm": "micrometer", "μm": "micrometer", "micron": "micrometer", "microns": "micrometer",
          "micrometer": "micrometer", "nm": "nanometer", "nanometer": "nanometer", "mm": "millimeter",
          "millimeter": "millimeter", "cm": "centimeter", "m": "meter", "angstrom": "angstrom", "Å": "angstrom"}
_CITATIONS = {  # first matching prefix of the network name
    "unet3d": ("Çiçek et al. 2016, 3D U-Net: learning dense volumetric segmentation from sparse annotation",
               "10.1007/978-3-319-46723-8_49"),
    "segnet": ("Badrinarayanan et al. 2017, SegNet: a deep convolutional encoder-decoder architecture",
               "10.1109/TPAMI.2016.2644615"),
    "deeplab": ("Chen et al. 2018, Encoder-decoder with atrous separable convolution (DeepLab v3+)",
                "10.1007/978-3-030-01234-2_49"),
    "z2c_deeplab": ("Chen et al. 2018, Encoder-decoder with atrous separable convolution (DeepLab v3+)",
                    "10.1007/978-3-030-01234-2_49"),
    "": ("Ronneberger et al. 2015, U-Net: convolutional networks for biomedical image segmentation",
         "10.1007/978-3-319-24574-4_28"),
}


def require(module: str) -> Any:
    """Import ``module`` of the ``export`` extra, or raise DeepSegError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DeepSegError(f"model export needs {module}: pip install 'deepseg[export]'") from None


class Probabilities(torch.nn.Module):
    """A deepseg network followed by a softmax over the classes: what an exported model computes.

    A network that reflect-pads its input to a multiple of its ``output_stride`` (DeepLab) decides so in
    Python, which tracing would freeze; here that padding is done with traced shape arithmetic (the
    network then never pads), so the exported graph takes every size the network takes."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.stride = internal_stride(network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            h, w = x.shape[-2], x.shape[-1]
            pad = ((self.stride - w % self.stride) % self.stride, (self.stride - h % self.stride) % self.stride)
            y = self.network(torch.nn.functional.pad(x, (0, pad[0], 0, pad[1]), mode="reflect"))
            return torch.softmax(y[..., :h, :w].float(), dim=1)
        return torch.softmax(self.network(x).float(), dim=1)


def internal_stride(network: torch.nn.Module) -> int:
    """The ``output_stride`` a (wrapped) 2D segmentation network pads its input to, else 1."""
    from .networks import SegmentationNetwork

    strides = [int(getattr(m, "output_stride", 1)) for m in network.modules()
               if isinstance(m, SegmentationNetwork) and m.spatial_dims == 2]
    return max(strides, default=1)


@dataclass(frozen=True)
class SizeRule:
    """Accepted spatial sizes ``minimum + k * step`` per axis; the output has ``size - loss`` voxels."""

    minimum: tuple[int, ...]
    step: tuple[int, ...]
    loss: tuple[int, ...]

    def sizes(self, count: int) -> list[tuple[int, ...]]:
        """The ``count`` smallest accepted shapes, growing together on every axis."""
        return [tuple(m + k * s for m, s in zip(self.minimum, self.step)) for k in range(count)]

    def fit(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest accepted shape >= ``shape`` per axis."""
        return tuple(m + s * max(0, -(-(int(n) - m) // s)) for n, m, s in zip(shape, self.minimum, self.step))

    def fit_below(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The largest accepted shape <= ``shape`` per axis (the minimum where ``shape`` is smaller)."""
        return tuple(m + s * max(0, (int(n) - m) // s) for n, m, s in zip(shape, self.minimum, self.step))

    def to_dict(self) -> dict[str, list[int]]:
        return {"minimum": list(self.minimum), "step": list(self.step), "loss": list(self.loss)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SizeRule":
        return cls(*(tuple(int(v) for v in data[k]) for k in ("minimum", "step", "loss")))


def size_rule(network: Any) -> SizeRule:
    """The sizes an exported ``network`` accepts: its valid sizes, on its down-sampling grid."""
    from .prediction import grid_factor

    minimum = network.valid_input_shape([1] * network.spatial_dims)
    step = grid_factor(network, minimum)
    losses = [tuple(a - b for a, b in zip(shape, network.output_shape(shape)))
              for shape in (minimum, tuple(m + s for m, s in zip(minimum, step)))]
    if losses[0] != losses[1]:
        raise ModelFileError(f"network {network.name!r} loses {losses[0]} voxels at {minimum} but {losses[1]} "
                             "one step larger: its output size is not a fixed offset, so it cannot be exported")
    return SizeRule(tuple(minimum), step, losses[0])


def _cpu_network(model: LoadedModel) -> torch.nn.Module:
    network = model.network
    if not isinstance(network, torch.nn.Module):
        raise InputError(f"model {str(model.path)!r} is already an exported model; export its model folder")
    if any(p.device.type != "cpu" for p in network.parameters()):
        network = copy.deepcopy(network).to("cpu")
    return network.eval()


def _channels(network: Any) -> int:
    return int(network.in_channels) * int(getattr(network, "z_context", 1))


def exchange_metadata(model: LoadedModel, rule: SizeRule) -> dict[str, Any]:
    """What an exported model stores about itself (ONNX metadata ``deepseg``, rdf.yaml ``config.deepseg``)."""
    return {"format": EXCHANGE_FORMAT, "format_version": 1, "output": "probabilities",
            "input": "normalized image (batch, channels, *spatial) float32", "size": rule.to_dict(),
            "model": model.config}


def check_equal(run: Callable[[np.ndarray], np.ndarray], module: torch.nn.Module, rule: SizeRule,
                channels: int, what: str) -> float:
    """Largest difference between ``run`` and ``module`` on random input (batch 2) of three accepted
    sizes; ModelFileError above :data:`TOLERANCE`."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in rule.sizes(3):
        x = torch.randn((2, channels, *shape), generator=generator)
        with torch.no_grad():
            expected = module(x).numpy()
        got = np.asarray(run(x.numpy()))
        if got.shape != expected.shape:
            raise ModelFileError(f"{what} returns shape {got.shape} for input {tuple(x.shape)}; PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
        if worst > TOLERANCE:
            raise ModelFileError(f"{what} differs from PyTorch by {worst:.3g} (> {TOLERANCE}) on input "
                                 f"{tuple(x.shape)}: the exported graph is not faithful for this network")
    return worst


def _trace_input(network: Any, rule: SizeRule) -> torch.Tensor:
    shape = rule.sizes(2)[1]  # one step above the minimum: no size-1 axis gets special-cased
    return torch.randn((1, _channels(network), *shape), generator=torch.Generator().manual_seed(1))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about Python ints taken from shapes and about the legacy exporter; the exported
    graphs are checked by :func:`check_equal` instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_onnx(network: torch.nn.Module, path: Path, metadata: dict[str, Any], rule: SizeRule,
               opset: int = OPSET) -> float:
    """Export ``network`` (+ softmax) to ONNX at ``path`` with dynamic batch and spatial axes and
    ``metadata``; returns the largest difference to PyTorch found by :func:`check_equal`."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    module = Probabilities(network).eval()
    names = [AXIS_IDS[d] for d in ("pln", "row", "col")[-network.spatial_dims:]]
    dynamic = {"input": {0: "batch", **{i + 2: n for i, n in enumerate(names)}},
               "probabilities": {0: "batch", **{i + 2: f"{n}_out" for i, n in enumerate(names)}}}
    try:  # the TorchScript-based exporter: keeps shape arithmetic dynamic (torch.export specializes it)
        with _quiet():
            torch.onnx.export(module, (_trace_input(network, rule),), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["probabilities"], dynamic_axes=dynamic)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: not exportable
        raise ModelFileError(f"network {getattr(network, 'name', '?')!r} cannot be exported to ONNX: "
                             f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}") from None
    graph = onnx.load(str(path))
    graph.doc_string = "deepseg segmentation network + softmax: normalized image in, class probabilities out"
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=str)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return check_equal(lambda x: session.run(None, {"input": x})[0], module, rule, _channels(network), "the ONNX model")


def write_torchscript(network: torch.nn.Module, path: Path, rule: SizeRule) -> float:
    """Trace ``network`` (+ softmax) to a TorchScript file; returns its largest difference to PyTorch."""
    module = Probabilities(network).eval()
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(module, _trace_input(network, rule), check_trace=False)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: not exportable
        raise ModelFileError(f"network {getattr(network, 'name', '?')!r} cannot be traced to TorchScript: "
                             f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}") from None
    with _quiet():  # torch.jit is deprecated in favour of torch.export, which bioimage.io does not read yet
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return check_equal(run, module, rule, _channels(network), "the TorchScript model")


def export_onnx(model: LoadedModel | str | Path, out: str | Path, *, opset: int = OPSET) -> dict[str, Any]:
    """Write ``model`` (a model folder or LoadedModel) as one ONNX file ``out`` (atomically, after the
    onnxruntime check); returns a summary (path, sizes, largest difference to PyTorch)."""
    model = load_model(model, device="cpu")
    network = _cpu_network(model)
    rule = size_rule(network)
    out = Path(out)
    with atomic_path(out) as tmp:
        difference = write_onnx(network, tmp, exchange_metadata(model, rule), rule, opset)
    return {"path": str(out), "format": "onnx", "opset": opset, **rule.to_dict(), "max_difference": difference}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_bioimageio(
    model: LoadedModel | str | Path,
    out: str | Path,
    *,
    sample: str | Path | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = (),
    license: str = "CC-BY-4.0",
    opset: int = OPSET,
) -> dict[str, Any]:
    """Write a bioimage.io model package (format 0.5) to folder ``out`` or to ``out`` ending in ``.zip``.

    The package holds rdf.yaml, TorchScript and ONNX weights, a test input (a centred crop of
    ``sample``, an image file, or seeded noise at the training statistics when no sample is given) and
    the output the model computes for it, a cover (input beside labels) and README.md. It appears only
    after both weight files reproduce PyTorch and ``bioimageio.spec`` validation passed.
    """
    model = load_model(model, device="cpu")
    network = _cpu_network(model)
    rule = size_rule(network)
    out = Path(out)
    zipped = out.suffix.lower() == ".zip"
    if not zipped and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {str(out)!r} exists and is not an empty folder: choose a new folder or a .zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.deepseg-new-", dir=out.parent))
    try:
        files = staging / "package"
        files.mkdir()
        summary = build_package(model, network, rule, files, sample=sample, name=name, description=description,
                                authors=authors, license=license, opset=opset)
        if zipped:
            with atomic_path(out) as tmp:
                _zip_folder(files, tmp)
                summary["validation"] = validate_package(tmp)
        else:
            summary["validation"] = validate_package(files)
            if out.is_dir():
                out.rmdir()
            os.replace(files, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"path": str(out), "format": "bioimageio", **summary}


def _zip_folder(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)


def validate_package(source: Path) -> str:
    """Validate a package (folder or zip) offline, checking its files and hashes; returns the status.

    With ``bioimageio.core`` installed this is its ``test_model`` (what bioimage.io runs: both weight
    formats must reproduce the test output from the test input through the rdf.yaml preprocessing, at
    several sizes and batch sizes), which must report "passed"; with ``bioimageio.spec`` only, the format
    validation, whose best status is "valid-format". Anything less raises ModelFileError."""
    spec = require("bioimageio.spec")
    root = source / "rdf.yaml" if source.is_dir() else source
    try:
        from bioimageio.core import test_model
    except ImportError:
        test_model = None
    with _quiet(), _silent_bioimageio():
        if test_model is not None:
            summary, required = test_model(root), "passed"
        else:
            summary, required = spec.load_description(root, perform_io_checks=True).validation_summary, "valid-format"
    if summary.status != required:
        errors = [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors]
        raise ModelFileError(f"bioimage.io validation of {str(source)!r} {summary.status}: " + "; ".join(errors[:5]))
    return str(summary.status)


@contextlib.contextmanager
def _silent_bioimageio() -> Iterator[None]:
    """bioimageio logs through loguru to stderr; the summary carries what matters."""
    try:
        from loguru import logger
    except ImportError:
        yield
        return
    logger.disable("bioimageio")
    try:
        yield
    finally:
        logger.enable("bioimageio")


def citation(network_name: str) -> dict[str, str]:
    """The paper behind a network (bioimage.io ``cite`` entry)."""
    for prefix, (text, doi) in _CITATIONS.items():
        if network_name.startswith(prefix):
            return {"text": text, "doi": doi}
    raise AssertionError("the empty prefix matches every name")  # pragma: no cover


def unit_name(unit: str | None) -> str | None:
    """deepseg's unit string as a bioimage.io space unit (``um`` -> ``micrometer``), or None."""
    return _UNITS.get(str(unit).strip()) if unit else None


# ------------------------------------------------------------------------------- bioimage.io package

ZMUV_EPS = 1e-8  # deepseg divides by max(std, 1e-8); the spec adds eps to std


def build_package(model: LoadedModel, network: torch.nn.Module, rule: SizeRule, folder: Path, *,
                  sample: str | Path | None, name: str | None, description: str | None, authors: Sequence[str],
                  license: str, opset: int) -> dict[str, Any]:
    """Write every file of a package into ``folder``; returns a summary (differences, test shapes)."""
    difference = {"onnx": write_onnx(network, folder / "weights.onnx", exchange_metadata(model, rule), rule, opset),
                  "torchscript": write_torchscript(network, folder / "weights.pt", rule)}
    raw = test_input(model, rule, sample)
    space = [AXIS_IDS[d] for d in ("pln", "row", "col")[-network.spatial_dims:]]
    steps = preprocessing(model.normalization, raw.shape[1], space)
    normalized = _normalized(model, raw)
    with torch.no_grad():
        output = Probabilities(network)(torch.from_numpy(normalized)).numpy()
    np.save(folder / "test_input.npy", raw if steps is not None else normalized)
    np.save(folder / "test_output.npy", output)
    write_cover(folder / "cover.png", raw, output)
    title = name or f"deepseg {model.path.name if model.path else network.name}"
    about = description or (f"{network.name} segmenting {model.classes} classes ({', '.join(model.class_names)}), "
                            "trained with deepseg")
    (folder / "README.md").write_text(readme(model, network, rule, title, about, steps), encoding="utf-8")
    content = rdf_content(model, network, rule, space, steps, folder, name=title, description=about,
                          authors=authors, license=license, opset=opset)
    ruyaml = require("ruyaml")
    writer = ruyaml.YAML(typ="safe", pure=True)
    writer.default_flow_style = False
    with open(folder / "rdf.yaml", "w", encoding="utf-8") as handle:
        writer.dump(content, handle)
    return {"max_difference": difference, "test_input": list(raw.shape), "test_output": list(output.shape),
            "preprocessing": [s["id"] for s in steps] if steps is not None else "stored normalized", **rule.to_dict()}


def _sample_pixels(model: LoadedModel, path: str | Path) -> np.ndarray:
    """Channel-first pixels of ``path`` as the network sees them: a 2D network gets the middle plane
    (its neighbours as channels for 2.5D networks)."""
    from .arrays import z_context_stack
    from .axes import channel_first
    from .io import read_image

    image = read_image(path)
    if "t" in image.dims:
        image = image.isel(t=0)
    pixels = channel_first(image)
    network = model.network
    if pixels.shape[0] != network.in_channels:
        raise InputError(f"sample {str(path)!r} has {pixels.shape[0]} channel(s); the model takes {network.in_channels}")
    spatial = pixels.ndim - 1
    if spatial < network.spatial_dims or (network.z_context > 1 and spatial != 3):
        raise InputError(f"sample {str(path)!r} is {spatial}D; model {network.name!r} needs a "
                         f"{3 if network.z_context > 1 or network.spatial_dims == 3 else 2}D image")
    if network.z_context > 1:
        return z_context_stack(pixels, pixels.shape[1] // 2, network.z_context)
    if spatial > network.spatial_dims:
        return np.asarray(pixels[:, pixels.shape[1] // 2])
    return pixels


def test_input(model: LoadedModel, rule: SizeRule, sample: str | Path | None) -> np.ndarray:
    """The raw (not normalized) test input ``(1, channels, *spatial)`` float32: a centred crop of
    ``sample`` of the training patch size (or the image size, if smaller), or seeded noise at the
    training statistics."""
    from .arrays import read_padded

    network = model.network
    channels = _channels(network)
    shape = rule.fit(model.patch)
    if sample is None:
        return _noise(model.normalization, channels, shape)[None]
    pixels = _sample_pixels(model, sample)
    shape = tuple(min(a, b) for a, b in zip(shape, rule.fit_below(pixels.shape[1:])))
    origin = [(n - s) // 2 for n, s in zip(pixels.shape[1:], shape)]
    return np.asarray(read_padded(pixels, origin, shape), dtype=np.float32)[None]


def _noise(norm: Any, channels: int, shape: Sequence[int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    per = lambda values, default: np.resize(np.asarray(values or [default], float), channels)  # noqa: E731
    if norm.method == "minmax":
        low, high = per(norm.low, 0.0), per(norm.high, 1.0)
        values = rng.uniform(size=(channels, *shape)) * (high - low).reshape(-1, *[1] * len(shape))
        return (values + low.reshape(-1, *[1] * len(shape))).astype(np.float32)
    mean, std = per(norm.mean, 0.0), per(norm.std, 1.0)
    values = rng.normal(size=(channels, *shape)) * std.reshape(-1, *[1] * len(shape))
    return (values + mean.reshape(-1, *[1] * len(shape))).astype(np.float32)


def _normalized(model: LoadedModel, raw: np.ndarray) -> np.ndarray:
    """``raw`` normalized as deepseg's prediction does (statistics of this input for ``zscore_image``)."""
    norm = model.normalization.image_statistics(raw[0])
    return np.ascontiguousarray(norm.apply(raw, channel_axis=1), dtype=np.float32)


def preprocessing(norm: Any, channels: int, space: Sequence[str]) -> list[dict[str, Any]] | None:
    """deepseg's normalization as bioimage.io 0.5 preprocessing steps, or None where the spec cannot
    express it (percentile clipping with different bounds per channel, std below the spec's 1e-6):
    the test input is then stored normalized and the README says so."""
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]

    def per_channel(**values: Sequence[float]) -> dict[str, Any]:
        tiled = {k: [float(x) for x in np.resize(np.asarray(v, float), channels)] for k, v in values.items()}
        return {k: v[0] for k, v in tiled.items()} if channels == 1 else {"axis": "channel", **tiled}

    method = norm.method
    if method == "none":
        return steps
    if method == "zscore_image":
        return steps + [{"id": "zero_mean_unit_variance", "kwargs": {"axes": list(space), "eps": ZMUV_EPS}}]
    if method == "minmax":
        low, high = np.asarray(norm.low, float), np.asarray(norm.high, float)
        gain = 1.0 / np.maximum(high - low, 1e-8)
        return steps + [{"id": "scale_linear", "kwargs": per_channel(gain=gain, offset=-low * gain)}]
    if min(norm.std) < 1e-6:
        return None
    if method == "percentile":
        if len(set(norm.low)) > 1 or len(set(norm.high)) > 1:
            return None
        steps.append({"id": "clip", "kwargs": {"min": float(norm.low[0]), "max": float(norm.high[0])}})
    return steps + [{"id": "fixed_zero_mean_unit_variance", "kwargs": per_channel(mean=norm.mean, std=norm.std)}]


def _identifier(text: str) -> str:
    import re

    return re.sub(r"\W+", "_", str(text)).strip("_") or "channel"


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in (_identifier(n) for n in names):
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return result


def input_channel_names(network: Any) -> list[str]:
    channels = [f"channel{c}" for c in range(network.in_channels)]
    k = int(getattr(network, "z_context", 1))
    if k == 1:
        return channels
    return [f"slice{dz:+d}_{c}".replace("+", "p").replace("-", "m") for dz in range(-(k // 2), k // 2 + 1) for c in channels]


def _space_axes(model: LoadedModel, space: Sequence[str], sizes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    spacing = model.config.get("spacing") or {}
    unit = unit_name(model.config.get("unit"))
    dims = {v: k for k, v in AXIS_IDS.items()}
    axes = []
    for axis, size in zip(space, sizes):
        entry: dict[str, Any] = {"type": "space", "id": axis, "size": size}
        if spacing.get(dims[axis]):
            entry["scale"] = float(spacing[dims[axis]])
        if unit:
            entry["unit"] = unit
        axes.append(entry)
    return axes


def rdf_content(model: LoadedModel, network: Any, rule: SizeRule, space: Sequence[str],
                steps: list[dict[str, Any]] | None, folder: Path, *, name: str, description: str,
                authors: Sequence[str], license: str, opset: int) -> dict[str, Any]:
    """The rdf.yaml of a package whose files are in ``folder``."""
    from . import __version__

    inputs_in = [{"min": m, "step": s} for m, s in zip(rule.minimum, rule.step)]
    outputs_in = [{"tensor_id": "input", "axis_id": a, "offset": -loss} for a, loss in zip(space, rule.loss)]
    normalized = "the image normalized as deepseg does (see README)" if steps is None else "the raw image"
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": name,
        "description": description,
        "authors": [{"name": a} for a in authors] or [{"name": "deepseg export"}],
        "cite": [citation(network.name)],
        "license": license,
        "tags": ["deepseg", "segmentation", "semantic-segmentation", f"{network.spatial_dims}d", "pytorch", "onnx"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": "input", "description": f"{normalized}, {network.in_channels} channel(s)",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": _unique(input_channel_names(network))},
                     *_space_axes(model, space, inputs_in)],
            "test_tensor": _file(folder, "test_input.npy"), "data": {"type": "float32"},
            "preprocessing": steps if steps is not None else [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}],
        }],
        "outputs": [{
            "id": "probabilities", "description": "class probabilities (softmax); labels = argmax over channels",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": _unique(model.class_names)},
                     *_space_axes(model, space, outputs_in)],
            "test_tensor": _file(folder, "test_output.npy"), "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {
            "torchscript": {**_file(folder, "weights.pt"), "pytorch_version": torch.__version__.split("+")[0]},
            "onnx": {**_file(folder, "weights.onnx"), "opset_version": opset, "parent": "torchscript"},
        },
        "config": {"deepseg": {**exchange_metadata(model, rule), "exported_by": f"deepseg {__version__}"}},
    }


def _file(folder: Path, name: str) -> dict[str, str]:
    return {"source": name, "sha256": sha256(folder / name)}


def write_cover(path: Path, raw: np.ndarray, output: np.ndarray) -> None:
    """PNG: the test input (first channel, middle plane) beside its labels, enlarged to >= 256 px high."""
    from PIL import Image

    from .io import glasbey_lut

    def plane(array: np.ndarray) -> np.ndarray:
        while array.ndim > 2:
            array = array[array.shape[0] // 2]
        return array

    image = plane(raw[0, 0]).astype(np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    gray = (np.clip((image - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8)
    labels = plane(output[0].argmax(0))
    colours = glasbey_lut().T.copy()
    colours[0] = 0
    pad = [((a - b) // 2, a - b - (a - b) // 2) for a, b in zip(gray.shape, labels.shape)]
    rgb = colours[np.pad(labels % 256, pad)]
    panel = np.concatenate([np.repeat(gray[..., None], 3, axis=2), rgb], axis=1)
    scale = max(1, -(-256 // panel.shape[0]))
    picture = Image.fromarray(panel).resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.NEAREST)
    picture.save(path, format="PNG")


def readme(model: LoadedModel, network: Any, rule: SizeRule, name: str, description: str,
           steps: list[dict[str, Any]] | None) -> str:
    """README.md of a package: what the model does, its input and output, how to run it."""
    norm = model.normalization
    training = model.config.get("training") or {}
    if steps is None:
        handling = (f"deepseg's normalization `{norm.method}` cannot be written as bioimage.io preprocessing, so "
                    "the input must already be normalized: `test_input.npy` is stored normalized, and other "
                    f"tools must apply this normalization first: `{json.dumps(norm.to_dict())}`.")
    else:
        handling = (f"deepseg's normalization `{norm.method}` is written as the preprocessing "
                    f"{', '.join('`' + s['id'] + '`' for s in steps)} in rdf.yaml; `test_input.npy` is raw.")
    if network.z_context > 1:
        handling += (f" This is a 2.5D network: the input channels are the {network.z_context} neighbouring slices "
                     "(plane-major) around the slice segmented.")
    return "\n".join([
        f"# {name}", "", description, "",
        "## Model", "",
        f"- network: `{network.name}` {json.dumps(model.config.get('network_options', {}))}",
        f"- classes: {', '.join(f'{i} {n}' for i, n in enumerate(model.class_names))}",
        f"- axes of the training images: {model.config.get('axes')}; training patch {list(model.patch)}",
        f"- trained: {training.get('epochs', '?')} epochs on {len(training.get('data', []))} image(s)",
        "", "## Input and output", "",
        f"Input `input`: (batch, {_channels(network)} channel(s), {', '.join(AXIS_IDS[d] for d in ('pln', 'row', 'col')[-network.spatial_dims:])}) float32. "
        f"Spatial sizes accepted: {list(rule.minimum)} + k * {list(rule.step)} per axis.",
        "", handling, "",
        f"Output `probabilities`: one channel per class (softmax); the label of a voxel is the channel with the "
        f"highest probability. The output is {list(rule.loss)} voxels smaller than the input per axis "
        "(valid-padding networks) or the same size.",
        "", "## Running it", "",
        "- deepseg: `deepseg predict this-package.zip image.tif --out labels.tif` (or the package folder, "
        "or `weights.onnx`); deepseg tiles large images and normalizes them as stored.",
        "- deepImageJ, ilastik and bioimage.io tools read `rdf.yaml`: TorchScript (`weights.pt`) and ONNX "
        "(`weights.onnx`) weights, both checked against PyTorch on export.",
        "", f"Exported with deepseg; weights of model folder `{model.path.name if model.path else '?'}`.", ""])
