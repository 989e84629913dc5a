"""Run an exported model: an ONNX file or a bioimage.io package (folder or .zip) written by ``deepseg export``.

:func:`load_exchange_model` returns an :class:`ExchangeModel`, a :class:`~engine.model_files.LoadedModel`
whose network is an :class:`OnnxNetwork` (onnxruntime), so :func:`engine.prediction.predict`,
``predict_file`` and ``deepseg predict`` tile, normalize and label with it as with a model folder. The
normalization, classes and size rule come from the ``deepseg`` metadata the export stored in the ONNX
graph; a package's ONNX weights are verified against the SHA-256 in its rdf.yaml.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import InputError, ModelFileError
from .export import SizeRule
from .model_files import LoadedModel, default_class_names
from .normalization import Normalization

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def is_exchange_model(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file, a .zip package, or a package folder or its rdf.yaml."""
    path = Path(path)
    if (path.suffix.lower() in (".onnx", ".zip") and not path.is_dir()) or path.name in RDF_NAMES:
        return True
    return path.is_dir() and not (path / "config.json").exists() and any((path / n).is_file() for n in RDF_NAMES)


@dataclass(eq=False)
class OnnxNetwork:
    """An exported network run by onnxruntime, with the geometry a deepseg network reports.

    Calling it returns log-probabilities: the graph ends in a softmax, and deepseg's predictor applies
    one, which turns them back into the same probabilities."""

    session: Any
    name: str
    spatial_dims: int
    in_channels: int
    classes: int
    rule: SizeRule
    z_context: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0

    @property
    def padding(self) -> str:
        return "valid" if any(self.rule.loss) else "same"

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest accepted spatial shape >= ``shape``: ``minimum + k * step`` per axis."""
        if len(shape) != self.spatial_dims:
            raise InputError(f"{self.name} is a {self.spatial_dims}D network but got a spatial shape {tuple(shape)}")
        return self.rule.fit(shape)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(n) for n in input_shape)
        if self.valid_input_shape(shape) != shape:
            raise InputError(f"{self.name} cannot take spatial input {shape}; pad it to {self.valid_input_shape(shape)}")
        return tuple(n - loss for n, loss in zip(shape, self.rule.loss))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        probabilities = self.session.run(None, {self.session.get_inputs()[0].name: array})[0]
        return torch.log(torch.from_numpy(probabilities).clamp_min(1e-30))

    def eval(self) -> "OnnxNetwork":
        return self


@dataclass
class ExchangeModel(LoadedModel):
    """A :class:`LoadedModel` backed by an exported ONNX graph (``kind``: "onnx" or "bioimageio")."""

    kind: str = "onnx"

    def describe(self) -> dict[str, Any]:
        net = self.network
        return {"path": str(self.path) if self.path else None, "kind": self.kind, "network": net.name,
                "spatial_dims": net.spatial_dims, "padding": net.padding, "in_channels": net.in_channels,
                "options": dict(net.options), "parameters": net.parameters, "receptive_field": None,
                "sizes": net.rule.to_dict(),
                "classes": self.classes, "class_names": self.class_names, "axes": self.config.get("axes"),
                "patch": list(self.patch), "normalization": self.normalization.to_dict(),
                "training": self.config.get("training", {}), "versions": self.config.get("versions", {})}


def _require_onnxruntime() -> Any:
    from .export import require

    return require("onnxruntime")


def load_exchange_model(path: str | Path, *, device: str | torch.device | None = "auto") -> ExchangeModel:
    """Load an ONNX file or a bioimage.io package (folder, its rdf.yaml, or .zip) that deepseg exported."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {str(path)!r} does not exist")
    if path.suffix.lower() == ".onnx":
        data, kind = path.read_bytes(), "onnx"
    else:
        data, kind = _package_onnx(path), "bioimageio"
    session = _session(data, device, path)
    metadata = _metadata(session, path)
    cfg = metadata["model"]
    try:
        network = OnnxNetwork(session, str(cfg["network"]), int(cfg["spatial_dims"]), int(cfg["in_channels"]),
                              int(cfg["classes"]), SizeRule.from_dict(metadata["size"]),
                              z_context=int(cfg.get("z_context", 1)), options=dict(cfg.get("network_options", {})),
                              parameters=_parameter_count(data))
        normalization = Normalization.from_dict(cfg["normalization"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"deepseg metadata of {str(path)!r} is incomplete: {err}") from None
    cfg.setdefault("class_names", default_class_names(network.classes))
    return ExchangeModel(network, cfg, normalization, path, torch.device("cpu"), kind=kind)  # type: ignore[arg-type]


def _parameter_count(data: bytes) -> int:
    """Values stored in the graph's initializers (the weights)."""
    from .export import require

    graph = require("onnx").load_model_from_string(data).graph
    return int(sum(int(np.prod(t.dims)) for t in graph.initializer))


def _session(data: bytes, device: str | torch.device | None, path: Path) -> Any:
    ort = _require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    wanted = str(device or "auto")
    providers = ["CPUExecutionProvider"]
    if wanted.startswith(("auto", "cuda")) and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(data, options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelFileError(f"{str(path)!r} is not a usable ONNX model: {(str(err).splitlines() or [''])[0]}") from None


def _metadata(session: Any, path: Path) -> dict[str, Any]:
    from .export import EXCHANGE_FORMAT, METADATA_KEY

    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        metadata = json.loads(text) if text else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != EXCHANGE_FORMAT:
        raise ModelFileError(f"{str(path)!r} was not exported by deepseg (no '{METADATA_KEY}' metadata): "
                             "deepseg predict runs ONNX files and packages written by `deepseg export`")
    return metadata


def _package_onnx(path: Path) -> bytes:
    """The ONNX weights of a package folder, rdf.yaml or .zip, checked against rdf.yaml's SHA-256."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                rdf_name = next((n for n in RDF_NAMES if n in names), None)
                if rdf_name is None:
                    raise ModelFileError(f"{str(path)!r} is not a bioimage.io package: it has no rdf.yaml")
                rdf = _parse_rdf(archive.read(rdf_name), path)
                source = _onnx_source(rdf, path)
                if source not in names:
                    raise ModelFileError(f"package {str(path)!r} lacks its ONNX weights {source!r}")
                data = archive.read(source)
        except zipfile.BadZipFile:
            raise ModelFileError(f"{str(path)!r} is not a zip file") from None
        expected = rdf["weights"]["onnx"].get("sha256")
    else:
        folder = path.parent if path.name in RDF_NAMES else path
        rdf_path = next((folder / n for n in RDF_NAMES if (folder / n).is_file()), folder / "rdf.yaml")
        if not rdf_path.is_file():
            raise ModelFileError(f"{str(path)!r} is not a bioimage.io package: it has no rdf.yaml")
        rdf = _parse_rdf(rdf_path.read_bytes(), path)
        weights = folder / _onnx_source(rdf, path)
        if not weights.is_file():
            raise ModelFileError(f"package {str(path)!r} lacks its ONNX weights {weights.name!r}")
        data, expected = weights.read_bytes(), rdf["weights"]["onnx"].get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ModelFileError(f"ONNX weights of {str(path)!r} do not match the sha256 in rdf.yaml: "
                             "modified or damaged; refusing to load them")
    return data


def _parse_rdf(text: bytes, path: Path) -> dict[str, Any]:
    from .export import require

    ruyaml = require("ruyaml")
    try:
        rdf = ruyaml.YAML(typ="safe", pure=True).load(text.decode("utf-8"))
    except Exception as err:  # noqa: BLE001 - any YAML error
        raise ModelFileError(f"rdf.yaml of {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ModelFileError(f"rdf.yaml of {str(path)!r} does not describe a model")
    return rdf


def _onnx_source(rdf: dict[str, Any], path: Path) -> str:
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), dict) else {}
    source = (weights.get("onnx") or {}).get("source") if isinstance(weights.get("onnx"), dict) else None
    if not isinstance(source, str) or Path(source).name != source:
        raise ModelFileError(f"package {str(path)!r} has no ONNX weights file inside it (deepseg runs the ONNX "
                             "weights of packages it exported)")
    return source


def predict_probabilities(model: ExchangeModel, batch: np.ndarray) -> np.ndarray:
    """The exported graph applied to an already normalized ``batch`` ``(N, C, *spatial)``."""
    return np.exp(model.network(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy())
