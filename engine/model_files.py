"""Model folders: ``config.json`` + safetensors weights, rebuilt from the folder alone.

Layout of a model folder::

    config.json                       network name and options, classes and names, axes, patch size,
                                      normalization and its statistics, provenance, and the weights:
                                      ``"weights": {"best": {"file", "sha256"}, "last": {...}}``
    weights-<sha256[:16]>.safetensors  one file per distinct set of weights, named by its content:
                                      "best" (the selected network) and "last" (after the last epoch,
                                      training only) share one file when they are equal

Weights are stored with safetensors (no code is executed when loading) and verified against the
SHA-256 recorded in ``config.json``, so a tampered or truncated file is refused.

Updating a folder is atomic as a whole: the new weights go to a new, content-addressed file, then
``config.json`` is replaced atomically (the single switch from the old state to the new), and only
then are weight files that ``config.json`` no longer names deleted. A kill at any moment leaves a
folder that loads, with either the old or the new weights; the next save removes what the killed one
left behind. A new folder is assembled in a temporary sibling and renamed into place. Folders written
before content-addressed names (``weights.safetensors``, ``weights_last.safetensors``) load unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator

import torch

from .errors import InputError, ModelFileError
from .fileutil import atomic_path
from .networks import SegmentationNetwork, build
from .normalization import Normalization

FORMAT = "deepseg-model"
FORMAT_VERSION = 1
WEIGHT_SLOTS = ("best", "last")
_WEIGHT_FILE = re.compile(r"weights-[0-9a-f]{16}\.safetensors")
#: Temporary files an interrupted save may leave in a model folder (removed by the next save).
_LEFTOVER = re.compile(r"\.weights-.+\.tmp|\.config\..+\.tmp\.json")
_STAGING = ".deepseg-new-"
_READ_ATTEMPTS = 10  # a loader reads the folder again while saves keep replacing config.json

try:  # POSIX: saves into one folder take turns (advisory lock on the folder itself)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


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
            "postprocess": self.config.get("postprocess"),
        }
        return info


def default_class_names(classes: int) -> list[str]:
    return ["background"] + [f"class{i}" for i in range(1, classes)]


def versions() -> dict[str, str]:
    from . import __version__

    return {"deepseg": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _store_weights(network: torch.nn.Module, directory: Path) -> dict[str, str]:
    """Write the weights of ``network`` into ``directory`` under their content-addressed name.

    Returns the ``config.json`` entry ``{"file": name, "sha256": digest}``. The file is complete and
    flushed to disk before it gets its final name, so that name never holds partial data.
    """
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
    data = save(state, metadata={"format": FORMAT})
    digest = hashlib.sha256(data).hexdigest()
    final = f"weights-{digest[:16]}.safetensors"
    fd, name = tempfile.mkstemp(prefix=".weights-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, directory / final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return {"file": final, "sha256": digest}


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

    ``config`` is a dict from :func:`model_config` (or pass its keyword fields here). ``which`` selects
    the weight slot, ``"best"`` or ``"last"``; an existing folder keeps its other slot. A new folder is
    assembled in a temporary sibling and renamed into place; an existing one (e.g. updated each epoch
    during training) is updated atomically as a whole (see the module docstring).
    """
    if which not in WEIGHT_SLOTS:
        raise InputError(f"which={which!r}: expected one of {WEIGHT_SLOTS}")
    directory = Path(directory)
    cfg = dict(config) if config is not None else model_config(network, **config_fields)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"model folder {str(directory)!r} exists and is not a folder")
    if directory.is_dir():
        _update_folder(network, directory, cfg, which)
    else:
        _create_folder(network, directory, cfg, which)
    return directory


def _update_folder(network: SegmentationNetwork, directory: Path, cfg: dict[str, Any], which: str) -> None:
    """New weights file, then config.json replaced (the switch), then unreferenced weights deleted."""
    with _locked(directory):
        old = _read_config(directory).get("weights") if (directory / "config.json").exists() else None
        old = {k: v for k, v in old.items() if isinstance(v, dict)} if isinstance(old, dict) else {}
        old_files = {entry.get("file") for entry in old.values()}
        _remove_unused(directory, keep=old_files)  # what a killed save left behind
        cfg["weights"] = {**old, which: _store_weights(network, directory)}
        _write_config(directory, cfg)
        new_files = {entry.get("file") for entry in cfg["weights"].values()}
        _remove_unused(directory, keep=new_files, dropped=old_files)


def _create_folder(network: SegmentationNetwork, directory: Path, cfg: dict[str, Any], which: str) -> None:
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{directory.name}{_STAGING}"
    for stale in parent.glob(glob.escape(prefix) + "*"):  # left by a save that was killed
        if stale.is_dir() and not stale.is_symlink() and all(
                _LEFTOVER.fullmatch(f.name) or _WEIGHT_FILE.fullmatch(f.name) or f.name == "config.json"
                for f in stale.iterdir()):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        cfg["weights"] = {which: _store_weights(network, staging)}
        _write_config(staging, cfg)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``directory`` (POSIX); flush its entries to disk at the end."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without locks: saves do not take turns
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
        with contextlib.suppress(OSError):  # not every file system syncs a folder
            os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def _remove_unused(directory: Path, keep: Collection[Any], dropped: Collection[Any] = ()) -> None:
    """Delete temporary files of saves, and weight files not in ``keep`` that are content-addressed
    or in ``dropped`` (named by the previous ``config.json``); nothing else in the folder is touched."""
    for path in directory.iterdir():
        name = path.name
        unused = name not in keep and (_WEIGHT_FILE.fullmatch(name) is not None or name in dropped)
        if (unused or _LEFTOVER.fullmatch(name)) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def stored_postprocess(directory: str | Path) -> str | None:
    """The default post-processing stored in a model folder's ``config.json`` (None when there is none)."""
    return _read_config(Path(directory)).get("postprocess") or None


def save_postprocess(directory: str | Path, steps: str | None) -> str | None:
    """Store the default post-processing of a model folder (``config.json`` ``"postprocess"``, replaced
    atomically), applied by every later prediction; ``None`` or ``"none"`` removes it. The steps are
    checked (syntax, class names) first; returns their canonical text (None when removed)."""
    from .postprocess import check_steps

    directory = Path(directory)
    with _locked(directory):
        cfg = _read_config(directory)
        text = check_steps(steps, cfg.get("class_names") or default_class_names(int(cfg["classes"])))
        if text is None:
            cfg.pop("postprocess", None)
        else:
            cfg["postprocess"] = text
        _write_config(directory, cfg)
    return text


def _write_config(directory: Path, cfg: dict[str, Any]) -> None:
    text = json.dumps(cfg, indent=2, default=_json_default) + "\n"
    with atomic_path(directory / "config.json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


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
    from .exchange_models import is_exchange_model, load_exchange_model

    if is_exchange_model(directory):  # an ONNX file or bioimage.io package written by `deepseg export`
        return load_exchange_model(directory, device=device)
    if which not in WEIGHT_SLOTS:
        raise InputError(f"which={which!r}: expected one of {WEIGHT_SLOTS}")
    directory = Path(directory)
    if directory.name == "config.json":
        directory = directory.parent
    if not directory.exists():
        raise FileNotFoundError(f"model folder {str(directory)!r} does not exist")
    cfg, data, weights = _verified_weights(directory, which)
    try:
        network = build(cfg["network"], in_channels=cfg["in_channels"], classes=cfg["classes"], **cfg["network_options"])
    except (KeyError, InputError) as err:
        raise ModelFileError(f"config.json of {str(directory)!r} cannot rebuild its network: {err}") from None
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        network.load_state_dict(load_bytes(data), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ModelFileError(f"weights {str(weights)!r} do not fit network {cfg['network']!r}: {err}") from None
    torch_device = resolve_device(device)
    network.to(torch_device).eval()
    return LoadedModel(network, cfg, Normalization.from_dict(cfg["normalization"]), directory, torch_device)


def _verified_weights(directory: Path, which: str) -> tuple[dict[str, Any], bytes, Path]:
    """``(config, weight bytes, weights path)``: the bytes read once and checked against the SHA-256.

    A save running meanwhile may replace ``config.json`` and delete the file the old one named; the
    folder is then read again (the new ``config.json`` names a complete file).
    """
    for attempt in range(_READ_ATTEMPTS):
        cfg = _read_config(directory)
        entry = _weights_entry(cfg, directory, which)
        weights = directory / entry["file"]
        try:
            data = weights.read_bytes()
            break
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1 or _read_config(directory) == cfg:
                raise ModelFileError(f"weights file {str(weights)!r} is missing") from None
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise ModelFileError(
            f"weights file {str(weights)!r} does not match the checksum in config.json: "
            "it was modified or damaged; refusing to load it"
        )
    return cfg, data, weights


def _weights_entry(cfg: dict[str, Any], directory: Path, which: str) -> dict[str, Any]:
    """The ``config.json`` record of the ``which`` weights ("best" falls back to "last")."""
    recorded = cfg.get("weights") if isinstance(cfg.get("weights"), dict) else {}
    entry = recorded.get(which) or (recorded.get("last") if which == "best" else None)
    if not entry:
        raise ModelFileError(f"model folder {str(directory)!r} has no {which!r} weights recorded in config.json")
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ModelFileError(f"config.json of {str(directory)!r} names weights file {name!r}: "
                             "expected a file name inside the model folder")
    return entry
