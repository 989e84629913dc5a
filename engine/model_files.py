"""Model folders: ``config.json`` + safetensors weights, rebuilt from the folder alone.

Layout of a model folder::

    config.json                 network name and options, classes and names, axes, patch size,
                                normalization and its statistics, provenance, weight checksums
    weights.safetensors         the selected network ("best" on validation, or "last")
    weights_last.safetensors    the weights after the last epoch (training only)

Weights are stored with safetensors (no code is executed when loading) and verified against the
SHA-256 recorded in ``config.json``, so a tampered or truncated file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, ModelFileError
from .fileutil import atomic_path
from .networks import SegmentationNetwork, build
from .normalization import Normalization

FORMAT = "deepseg-model"
FORMAT_VERSION = 1
WEIGHT_FILES = {"best": "weights.safetensors", "last": "weights_last.safetensors"}


@dataclass
class LoadedModel:
    """A network with everything needed to apply it: config, normalization, device."""

    network: SegmentationNetwork
    config: dict[str, Any]
    normalization: Normalization
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def classes(self) -> int:
        return int(self.config["classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.config.get("class_names") or default_class_names(self.classes))

    @property
    def patch(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.config["patch"])

    def describe(self) -> dict[str, Any]:
        """Everything ``deepseg info`` shows: architecture, parameters, receptive field, provenance."""
        from .networks.analysis import summarize

        info = {
            "path": str(self.path) if self.path else None,
            **summarize(self.network),
            "classes": self.classes,
            "class_names": self.class_names,
            "axes": self.config.get("axes"),
            "patch": list(self.patch),
            "normalization": self.normalization.to_dict(),
            "training": self.config.get("training", {}),
            "versions": self.config.get("versions", {}),
        }
        return info


def default_class_names(classes: int) -> list[str]:
    return ["background"] + [f"class{i}" for i in range(1, classes)]


def versions() -> dict[str, str]:
    from . import __version__

    return {"deepseg": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_weights(network: torch.nn.Module, path: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    return _sha256(path)


def model_config(
    network: SegmentationNetwork,
    *,
    patch: tuple[int, ...] | list[int],
    normalization: Normalization,
    axes: str,
    class_names: list[str] | None = None,
    spacing: dict[str, float] | None = None,
    unit: str | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` content describing ``network`` (without weight checksums)."""
    classes = int(network.classes)
    names = list(class_names) if class_names else default_class_names(classes)
    if len(names) != classes:
        raise InputError(f"{len(names)} class names for {classes} classes: {names}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": network.name,
        "network_options": dict(network.options),
        "in_channels": int(network.in_channels),
        "classes": classes,
        "class_names": names,
        "spatial_dims": int(network.spatial_dims),
        "z_context": int(getattr(network, "z_context", 1)),
        "axes": axes,
        "patch": [int(p) for p in patch],
        "normalization": normalization.to_dict(),
        "spacing": dict(spacing or {}),
        "unit": unit,
        "training": dict(training or {}),
        "versions": versions(),
        "weights": {},
    }


def save_model(
    network: SegmentationNetwork,
    directory: str | Path,
    *,
    config: dict[str, Any] | None = None,
    which: str = "best",
    **config_fields: Any,
) -> Path:
    """Write ``network`` into model folder ``directory``; returns the folder.

    ``config`` is a dict from :func:`model_config` (or pass its keyword fields here). A new folder is
    assembled in a temporary sibling and renamed into place; an existing folder (e.g. updated each
    epoch during training) gets each file replaced atomically, weights before ``config.json``.
    ``which`` selects the weight slot: ``"best"`` (``weights.safetensors``) or ``"last"``.
    """
    if which not in WEIGHT_FILES:
        raise InputError(f"which={which!r}: expected one of {tuple(WEIGHT_FILES)}")
    directory = Path(directory)
    cfg = dict(config) if config is not None else model_config(network, **config_fields)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"model folder {str(directory)!r} exists and is not a folder")
    if directory.is_dir():
        old = _read_config(directory) if (directory / "config.json").exists() else {}
        cfg["weights"] = {**old.get("weights", {}), **cfg.get("weights", {})}
        cfg["weights"][which] = {"file": WEIGHT_FILES[which], "sha256": _write_weights(network, directory / WEIGHT_FILES[which])}
        _write_config(directory, cfg)
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        cfg["weights"] = {which: {"file": WEIGHT_FILES[which], "sha256": _write_weights(network, staging / WEIGHT_FILES[which])}}
        _write_config(staging, cfg)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _write_config(directory: Path, cfg: dict[str, Any]) -> None:
    with atomic_path(directory / "config.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelFileError(f"{str(directory)!r} is not a deepseg model folder: it has no config.json")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a deepseg model config (expected \"format\": \"{FORMAT}\")")
    version = cfg.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"model folder {str(directory)!r} has format_version {version!r}; this deepseg reads "
            f"versions 1..{FORMAT_VERSION} (upgrade deepseg to use this model)"
        )
    return cfg


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None: CUDA if available, else Apple MPS if available, else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not valid: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
    return resolved


def load_model(
    directory: str | Path | LoadedModel, *, device: str | torch.device | None = "auto", which: str = "best"
) -> LoadedModel:
    """Rebuild the network of a model folder and load its verified weights (in eval mode)."""
    if isinstance(directory, LoadedModel):
        return directory
    directory = Path(directory)
    if directory.name == "config.json":
        directory = directory.parent
    if not directory.exists():
        raise FileNotFoundError(f"model folder {str(directory)!r} does not exist")
    cfg = _read_config(directory)
    entry = cfg.get("weights", {}).get(which) or (cfg.get("weights", {}).get("last") if which == "best" else None)
    if not entry:
        raise ModelFileError(f"model folder {str(directory)!r} has no {which!r} weights recorded in config.json")
    weights = directory / entry["file"]
    if not weights.is_file():
        raise ModelFileError(f"weights file {str(weights)!r} is missing")
    if _sha256(weights) != entry.get("sha256"):
        raise ModelFileError(
            f"weights file {str(weights)!r} does not match the checksum in config.json: "
            "it was modified or damaged; refusing to load it"
        )
    try:
        network = build(cfg["network"], in_channels=cfg["in_channels"], classes=cfg["classes"], **cfg["network_options"])
    except (KeyError, InputError) as err:
        raise ModelFileError(f"config.json of {str(directory)!r} cannot rebuild its network: {err}") from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ModelFileError(f"weights {str(weights)!r} do not fit network {cfg['network']!r}: {err}") from None
    torch_device = resolve_device(device)
    network.to(torch_device).eval()
    return LoadedModel(network, cfg, Normalization.from_dict(cfg["normalization"]), directory, torch_device)
