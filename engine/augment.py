"""Training augmentation on whole batches in torch: one sampling grid for image and labels, then intensity.

:meth:`Augmentation.batch` takes normalized image patches ``(B, C, *crop)`` and their labels
``(B, *crop)`` (ignore label: negative) and returns ``(B, C, *patch)`` and ``(B, *patch)``; ``crop``
may be larger than ``patch`` (:meth:`Augmentation.crop`: the context the spatial transforms need).

Spatial, applied to image and labels with ONE grid per sample (``affine_grid``/``grid_sample``):
mirroring per axis, rot90 in YX (square patches), rotation by any angle, scaling, shear (one affine
matrix), and elastic deformation (random displacements of control points every ``elastic_grid``
voxels, smoothly interpolated and added to the grid). The image is interpolated (bi/trilinear), the
labels take the nearest voxel, so labels only ever hold their original values (the ignore label
included). The patch may be cut from a larger crop (up to ``context`` x the patch per axis, only when
a warping transform is on) so rotated/zoomed-out patches see real image data; whatever falls
outside the crop is filled by mirroring, image and labels alike (a mirrored image with its mirrored
labels is a consistent pair; no zero borders, no unlabelled seams). ``context`` is 1 by default
(mirroring only): the patch sampler keeps its window inside the image, so a larger crop would keep
patches a margin away from the image borders. For anisotropic 3D data
(``in_plane=True``) rotation, shear, scaling, elastic, blur and low resolution act in YX only.

Intensity, image only, per sample: Gaussian noise, Gaussian blur, brightness (shift by a fraction of
the patch's standard deviation), contrast (around the mean, clipped to the original range, as nnU-Net),
low-resolution simulation (nearest downsampling, linear upsampling) and gamma (on the range of each
channel). Probabilities and ranges follow nnU-Net v2 in the ``strong`` preset (see :data:`PRESETS`).
Random numbers come from the numpy Generator passed in (parameters) and a torch Generator seeded
from it (noise fields), so a seed reproduces every batch.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch

#: probability fields: the transforms, in the order they are applied
TRANSFORMS = ("flip", "rot90", "rotate", "scale", "shear", "elastic",
              "noise", "blur", "brightness", "contrast", "lowres", "gamma")
#: the range of each transform that has one (``name=P:LOW:HIGH`` in the advanced string)
RANGES = {"rotate": "rotate_range", "scale": "scale_range", "shear": "shear_range", "elastic": "elastic_range",
          "noise": "noise_std", "blur": "blur_sigma", "brightness": "brightness_range",
          "contrast": "contrast_range", "lowres": "lowres_range", "gamma": "gamma_range"}
_SYMMETRIC = ("rotate_range", "tilt_range", "shear_range", "brightness_range")  # a number r means (-r, r)
_WARPING = ("rotate", "scale", "shear", "elastic")
_OFF = {name: 0.0 for name in TRANSFORMS}

PRESETS: dict[str, dict[str, Any]] = {
    "none": dict(_OFF),
    # flips, rot90 and mild intensity changes: deepseg's augmentation before 0.9 (the dataclass defaults)
    "light": {},
    # rotation and scaling, mild intensity changes: chosen by measurement on synthetic data (README)
    "default": {**_OFF, "flip": 0.5, "rot90": 0.5, "rotate": 0.2, "scale": 0.2, "scale_range": (0.8, 1.25),
                "noise": 0.1, "noise_std": (0.0, 0.1), "blur": 0.1, "brightness": 0.15,
                "contrast": 0.15, "contrast_range": (0.75, 1.25), "gamma": 0.15},
    # nnU-Net v2's recipe plus elastic deformation and shear
    "strong": {**_OFF, "flip": 0.5, "rot90": 0.5, "rotate": 0.2, "scale": 0.2, "shear": 0.2, "elastic": 0.2,
               "noise": 0.1, "noise_std": (0.0, 0.316), "blur": 0.2, "brightness": 0.15,
               "brightness_range": 0.25, "contrast": 0.15, "contrast_range": (0.75, 1.25),
               "lowres": 0.25, "gamma": 0.3},
}
DEFAULT_PRESET = "default"
#: the training default: ``light`` for short U-Net runs, :data:`DEFAULT_PRESET` otherwise (:func:`auto_preset`)
AUTO = "auto"
AUTO_LIGHT_STEPS = 1000  # shorter U-Net runs: light. Measured with benchmarks/bench_quality.py (README)
AUTO_LIGHT_NETWORKS = ("unet2d", "unet3d", "unet3d_aniso")  # the networks plans choose, where light was measured


def auto_preset(expected_steps: float | None, network: str = "unet2d") -> str:
    """The preset ``augmentation="auto"`` means for a run of about ``expected_steps`` training steps (None:
    unknown) of ``network``: ``light`` (flips, rot90, mild intensity) for the U-Nets of
    :data:`AUTO_LIGHT_NETWORKS` under :data:`AUTO_LIGHT_STEPS` steps, where a short run gains more from
    easy samples and, in 3D on a CPU, from the steps that resampling volumes would cost; otherwise
    :data:`DEFAULT_PRESET` (rotation and scaling). Measured in 120-step runs on large blobs (3 seeds):
    U-Net 0.987 light vs 0.984 default, but DeepLab v3+ 0.76 vs 0.89 and SegNet 0.954 vs 0.958."""
    short = expected_steps is not None and expected_steps < AUTO_LIGHT_STEPS
    return "light" if short and network in AUTO_LIGHT_NETWORKS else DEFAULT_PRESET


@dataclass
class Augmentation:
    """Probability (0..1, per sample; ``flip``: per axis) and range of each transform.

    Defaults are the ``light`` preset (what ``augmentation={}`` always meant). Angles in degrees;
    ``scale``: magnification; ``elastic_range``: displacement amplitude in voxels; ``noise_std``,
    ``brightness_range``: in units of the normalized image; ``lowres_range``: downsampling factor.
    A number where a range is expected is ``(-r, r)`` for rotation, tilt, shear and brightness and
    ``(r, r)`` otherwise. ``tilt_range``: rotation out of the YX plane (isotropic 3D only).
    ``context``: the largest crop, as a multiple of the patch per axis, that warping transforms read.
    """

    flip: float = 0.5
    rot90: float = 0.5
    rotate: float = 0.0
    rotate_range: tuple[float, float] = (-180.0, 180.0)
    tilt_range: tuple[float, float] = (-30.0, 30.0)
    scale: float = 0.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    shear: float = 0.0
    shear_range: tuple[float, float] = (-10.0, 10.0)
    elastic: float = 0.0
    elastic_range: tuple[float, float] = (2.0, 5.0)
    elastic_grid: float = 16.0
    noise: float = 0.2
    noise_std: tuple[float, float] = (0.05, 0.05)
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness: float = 0.2
    brightness_range: tuple[float, float] = (-0.1, 0.1)
    contrast: float = 0.2
    contrast_range: tuple[float, float] = (0.9, 1.1)
    lowres: float = 0.0
    lowres_range: tuple[float, float] = (0.5, 1.0)
    gamma: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    context: float = 1.0

    def __post_init__(self) -> None:
        for name in TRANSFORMS:
            p = _number(name, getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise InputError(f"augmentation probability {name}={getattr(self, name)!r}: expected a value in 0..1")
            setattr(self, name, p)
        for f in fields(self):
            if f.name.endswith(("_range", "_std", "_sigma")):
                setattr(self, f.name, _pair(f.name, getattr(self, f.name), f.name in _SYMMETRIC))
        self.elastic_grid = _number("elastic_grid", self.elastic_grid)
        self.context = _number("context", self.context)
        self._check_ranges()

    def _check_ranges(self) -> None:
        rules = {"scale_range": (lambda a, b: a > 0, "> 0"), "gamma_range": (lambda a, b: a > 0, "> 0"),
                 "lowres_range": (lambda a, b: 0 < a and b <= 1, "in (0, 1]"),
                 "shear_range": (lambda a, b: -80 <= a and b <= 80, "in -80..80 degrees")}
        rules.update({name: (lambda a, b: a >= 0, ">= 0")
                      for name in ("contrast_range", "noise_std", "blur_sigma", "elastic_range")})
        for name, (valid, expected) in rules.items():
            if not valid(*getattr(self, name)):
                raise InputError(f"augmentation {name}={getattr(self, name)}: expected values {expected}")
        if self.elastic_grid < 2:
            raise InputError(f"augmentation elastic_grid={self.elastic_grid:g}: expected >= 2 voxels")
        if self.context < 1:
            raise InputError(f"augmentation context={self.context:g}: expected >= 1 (1: mirror at the patch border)")

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def off(cls) -> "Augmentation":
        return cls(**PRESETS["none"])

    @classmethod
    def preset(cls, name: str) -> "Augmentation":
        if name not in PRESETS:
            raise InputError(f"augmentation preset {name!r}: expected one of {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    @classmethod
    def from_config(cls, value: "str | dict[str, Any] | Augmentation | None") -> "Augmentation":
        """The augmentation of a ``TrainConfig.augmentation`` value: a preset name, an advanced string
        (:func:`parse_augmentation`), a mapping of field values (older model folders), or None/``auto`` (the
        default preset; training resolves ``auto`` from the run's length first, :func:`auto_preset`)."""
        if isinstance(value, Augmentation):
            return value
        if value is None or (isinstance(value, str) and value.strip() in ("", AUTO)):
            return cls.preset(DEFAULT_PRESET)  # "auto" without a run to size it (training: auto_preset)
        if isinstance(value, str):
            return parse_augmentation(value)
        if isinstance(value, dict):
            unknown = [k for k in value if k not in cls.field_names()]
            if unknown:
                raise InputError(f"augmentation: unknown setting(s) {', '.join(map(repr, unknown))}; "
                                 f"valid: {', '.join(cls.field_names())}")
            return cls(**value)
        raise InputError(f"augmentation={value!r}: expected a preset ({', '.join(PRESETS)}) or a string like "
                         f"'rotate=0.2:-30:30,scale=0.2:0.7:1.4'")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Augmentation":
        return cls(**data)

    def to_text(self) -> str:
        """The shortest advanced string for this augmentation: a preset name, or ``none`` plus changes."""
        for name, settings in PRESETS.items():
            if Augmentation(**settings) == self:
                return name
        base = Augmentation.off()
        changed = [(f.name, getattr(self, f.name)) for f in fields(self)
                   if getattr(self, f.name) != getattr(base, f.name)]
        numbers = [value if isinstance(value, tuple) else (value,) for _, value in changed]
        return ",".join(["none", *(f"{name}=" + ":".join(f"{v:.12g}" for v in values)
                                   for (name, _), values in zip(changed, numbers))])

    def describe(self) -> str:
        """The transforms that are on, e.g. ``flip 0.5, rotate 0.2 (-180..180), noise 0.1 (0..0.1)``."""
        parts = []
        for name in TRANSFORMS:
            p = getattr(self, name)
            if p > 0:
                rng = getattr(self, RANGES[name]) if name in RANGES else None
                parts.append(f"{name} {p:g}" + (f" ({rng[0]:g}..{rng[1]:g})" if rng else ""))
        return ", ".join(parts) or "none"

    # --------------------------------------------------------------------------------------- geometry
    @property
    def warps(self) -> bool:
        """Whether a transform that resamples the patch (rotation, scaling, shear, elastic) is on."""
        return any(getattr(self, name) > 0 for name in _WARPING)

    def crop(self, patch: Sequence[int], in_plane: bool = False) -> tuple[int, ...]:
        """The crop to sample so that the warping transforms read image data, not mirrored borders:
        ``patch`` plus a margin per axis, at most ``context`` x ``patch`` (the patch if nothing warps)."""
        patch = tuple(int(p) for p in patch)
        if not self.warps:
            return patch
        angles = np.radians(np.linspace(*self.rotate_range, 91)) if self.rotate > 0 else np.zeros(1)
        turn = float(np.max(np.abs(np.cos(angles)) + np.abs(np.sin(angles))))
        zoom = 1.0 / self.scale_range[0] if self.scale > 0 else 1.0
        shear = 1.0 + (math.tan(math.radians(max(map(abs, self.shear_range)))) if self.shear > 0 else 0.0)
        elastic = math.ceil(2 * self.elastic_range[1]) if self.elastic > 0 else 0
        frozen = 1 if in_plane and len(patch) == 3 else 0  # anisotropic Z: nothing moves along it
        margins = [min(math.ceil((turn * zoom * shear - 1) * p / 2) + elastic, int((self.context - 1) * p / 2))
                   for p in patch[frozen:]]
        return patch[:frozen] + tuple(p + 2 * m for p, m in zip(patch[frozen:], margins))

    # ------------------------------------------------------------------------------------------- apply
    def batch(self, image: "torch.Tensor", labels: "torch.Tensor", rng: np.random.Generator, *,
              shape: Sequence[int] | None = None, in_plane: bool = False) -> "tuple[torch.Tensor, torch.Tensor]":
        """Augment a batch: image ``(B, C, *crop)`` float, labels ``(B, *crop)`` integer (negative: ignore)
        -> ``(B, C, *shape)`` and ``(B, *shape)`` (``shape``: the patch, centred in the crop; default: crop)."""
        import torch

        shape = tuple(int(s) for s in (shape or image.shape[2:]))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        image, labels = _spatial(self, image, labels, rng, generator, shape, in_plane)
        return _intensity(self, image.float(), rng, generator, in_plane), labels

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 in_plane: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Augment one patch ``(C, *spatial)`` and its labels ``(*spatial)``; returns new numpy arrays."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        y = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))[None]
        x, y = self.batch(x, y, rng, in_plane=in_plane)
        return np.ascontiguousarray(x[0].numpy()), y[0].numpy().astype(labels.dtype)


def in_plane_only(spacing: Sequence[float], patch: Sequence[int]) -> bool:
    """Whether a 3D patch is anisotropic, so spatial transforms act in YX only: the Z voxel size is
    over 2x the in-plane one, or the patch is over 3x longer in YX than in Z (nnU-Net's rule)."""
    if len(patch) != 3:
        return False
    z, y, x = (float(s) for s in spacing[-3:]) if len(spacing) >= 3 else (1.0, 1.0, 1.0)
    return z > 2.0 * min(y, x) or max(patch[1:]) > 3 * patch[0]


# ------------------------------------------------------------------------------------------ parsing
def parse_augmentation(text: str) -> Augmentation:
    """A preset name, or comma/space-separated items on top of a preset (``none`` if none is named):
    ``NAME=P`` or ``NAME=P:LOW:HIGH`` for a transform, ``SETTING=V`` or ``SETTING=LOW:HIGH`` for any
    other setting, e.g. ``rotate=0.2:-30:30,scale=0.2:0.7:1.4,elastic=0.1,blur=0.2`` or ``strong,elastic=0``."""
    items = [item for item in text.replace(",", " ").split() if item]
    presets = [item for item in items if item in PRESETS]
    if len(presets) > 1:
        raise InputError(f"augmentation {text!r}: names two presets ({', '.join(presets)}); give at most one")
    values: dict[str, Any] = dict(PRESETS[presets[0] if presets else "none"])
    for item in items:
        if item not in PRESETS:
            values.update(_parse_item(item))
    try:
        return Augmentation(**values)
    except InputError as err:
        raise InputError(f"augmentation {text!r}: {str(err).removeprefix('augmentation ')}") from None


def _valid_items() -> str:
    settings = [n for n in Augmentation.field_names() if n not in TRANSFORMS]
    transforms = ", ".join(f"{n}=P" + (":LOW:HIGH" if n in RANGES else "") for n in TRANSFORMS)
    return (f"presets {', '.join(PRESETS)}; transforms {transforms}; "
            f"settings {', '.join(settings)}")


def _parse_item(item: str) -> dict[str, Any]:
    name, _, value = item.partition("=")
    valid = Augmentation.field_names()
    if name not in valid:
        close = difflib.get_close_matches(name, valid + list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"augmentation item {item!r}: unknown name {name!r}{hint}; valid: {_valid_items()}")
    if not value:
        raise InputError(f"augmentation item {item!r}: expected {name}=VALUE, e.g. {name}=0.2")
    try:
        numbers = [float(v) for v in value.split(":")]
    except ValueError:
        raise InputError(f"augmentation item {item!r}: expected numbers separated by ':', "
                         "e.g. rotate=0.2:-30:30") from None
    is_range = name.endswith(("_range", "_std", "_sigma"))
    if name in RANGES and len(numbers) in (1, 3):
        return {name: numbers[0], **({RANGES[name]: tuple(numbers[1:])} if len(numbers) == 3 else {})}
    if is_range and len(numbers) in (1, 2):
        return {name: numbers[0] if len(numbers) == 1 else tuple(numbers)}
    if not is_range and name not in RANGES and len(numbers) == 1:
        return {name: numbers[0]}
    form = f"{name}=P:LOW:HIGH or {name}=P" if name in RANGES else f"{name}=LOW:HIGH" if is_range else f"{name}=P"
    raise InputError(f"augmentation item {item!r}: expected {form}")


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"augmentation {name}={value!r}: expected a number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise InputError(f"augmentation {name}={value!r}: expected a number")
    return number


def _pair(name: str, value: Any, symmetric: bool) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        r = _number(name, value)
        return (-abs(r), abs(r)) if symmetric else (r, r)
    try:
        low, high = (_number(name, v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"augmentation {name}={value!r}: expected a number or two numbers (low, high)") from None
    if low > high:
        raise InputError(f"augmentation {name}={value!r}: expected low <= high")
    return (low, high)


# ------------------------------------------------------------------------------------------ spatial
def _spatial(aug: Augmentation, image: "torch.Tensor", labels: "torch.Tensor", rng: np.random.Generator,
             generator: "torch.Generator", shape: tuple[int, ...],
             in_plane: bool) -> "tuple[torch.Tensor, torch.Tensor]":
    """Flips, rot90, the affine and the elastic field as one resampling of image and labels; samples
    that are only flipped or turned are cropped exactly (no interpolation, no resampling cost)."""
    import torch

    count, dims = image.shape[0], len(shape)
    flips = rng.random((count, dims)) < aug.flip
    square = shape[-1] == shape[-2]
    turns = np.where((rng.random(count) < aug.rot90) & square, rng.integers(1, 4, count), 0)
    matrices, warped = _affine(aug, rng, count, dims, in_plane and dims == 3)
    elastic = (rng.random(count) < aug.elastic) & (aug.elastic_range[1] > 0)
    amplitude = rng.uniform(*aug.elastic_range, count) * elastic
    moving = np.flatnonzero(warped | elastic)
    if not len(moving):
        image, labels = _centre(image, shape, 2), _centre(labels, shape, 1)
        return _flip_turn(image, flips, turns, 2), _flip_turn(labels, flips, turns, 1)
    out = _flip_turn(_centre(image, shape, 2), flips, turns, 2).float()
    lab = _flip_turn(_centre(labels, shape, 1), flips, turns, 1)
    for b in moving:  # flips and quarter turns of the output grid, before the affine
        matrices[b] = matrices[b] @ np.diag(np.where(flips[b], -1.0, 1.0)) @ _quarter_turn(dims, int(turns[b]))
    grid = _grid(matrices[moving], shape, image.shape[2:], image.device)
    if elastic[moving].any():
        field = _elastic(aug, amplitude[moving], shape, image.shape[2:], in_plane and dims == 3, generator)
        grid = grid + field.to(grid)
    grid = ((grid - 1).remainder(4) - 2).abs() - 1  # mirrored at the crop's border voxels (cheaper than "reflection")
    index = torch.from_numpy(moving).to(image.device)
    sample = torch.nn.functional.grid_sample  # "bilinear" is trilinear for 3D
    out[index] = sample(image[index].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    nearest = sample(labels[index][:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True)
    lab[index] = nearest[:, 0].round().to(lab.dtype)
    return out, lab


def _affine(aug: Augmentation, rng: np.random.Generator, count: int, dims: int,
            in_plane: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the matrix mapping output voxel offsets (from the centre) to input offsets, and
    whether it is not the identity. Rotation, shear and scaling act on (Y, X); in isotropic 3D, tilts
    rotate out of the plane and scaling includes Z."""
    rotate, scale, shear = (rng.random((3, count)) < [[aug.rotate], [aug.scale], [aug.shear]])
    angles = np.radians(rng.uniform(*aug.rotate_range, count)) * rotate
    tilts = np.radians(rng.uniform(*aug.tilt_range, (count, 2))) * rotate[:, None] * (dims == 3 and not in_plane)
    factors = np.where(scale, rng.uniform(*aug.scale_range, count), 1.0)
    shears = np.tan(np.radians(rng.uniform(*aug.shear_range, count))) * shear
    shear_axis = rng.integers(0, 2, count)
    matrices = np.tile(np.eye(dims), (count, 1, 1))
    for b in range(count):
        m = np.eye(dims)
        m[-2:, -2:] = _rotation(angles[b])
        s = np.eye(2)
        s[shear_axis[b], 1 - shear_axis[b]] = shears[b]
        m[-2:, -2:] = m[-2:, -2:] @ s
        if dims == 3 and not in_plane:
            m = _tilt(tilts[b]) @ m
        zoom = np.full(dims, 1.0 / factors[b])
        if in_plane and dims == 3:
            zoom[0] = 1.0
        matrices[b] = m @ np.diag(zoom)
    return matrices, rotate | scale | shear


def _rotation(angle: float) -> np.ndarray:
    """Offsets (y, x) of the output -> input for a rotation by ``angle``: +90 degrees is ``np.rot90``."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, s], [-s, c]])


def _tilt(angles: np.ndarray) -> np.ndarray:
    """Rotations in the (Z, X) and (Z, Y) planes."""
    zx, zy = np.eye(3), np.eye(3)
    zx[np.ix_([0, 2], [0, 2])] = _rotation(angles[0])
    zy[np.ix_([0, 1], [0, 1])] = _rotation(angles[1])
    return zx @ zy


def _quarter_turn(dims: int, k: int) -> np.ndarray:
    m = np.eye(dims)
    m[-2:, -2:] = np.linalg.matrix_power(_rotation(math.pi / 2).round(), k)
    return m


def _grid(matrices: np.ndarray, shape: tuple[int, ...], source: Sequence[int], device: Any) -> "torch.Tensor":
    """The ``grid_sample`` grid (``affine_grid``, align_corners=True) of the output voxels mapped by
    ``matrices`` (voxel offsets from the output's centre), placed where :func:`_centre` crops the output."""
    import torch

    out_half = np.array([max(n - 1, 1) / 2 for n in shape])
    in_half = np.array([max(m - 1, 1) / 2 for m in source])
    centre = np.array([(m - n) // 2 + (n - 1) / 2 for m, n in zip(source, shape)])
    linear = matrices * out_half[None, None, :] / in_half[None, :, None]  # normalized output -> normalized input
    shift = np.broadcast_to(centre / in_half - 1, (len(matrices), len(shape)))
    theta = np.concatenate([linear[:, ::-1, ::-1], shift[:, ::-1, None]], axis=2)  # x first, as grid_sample
    theta_t = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float32)).to(device)
    return torch.nn.functional.affine_grid(theta_t, [len(matrices), 1, *shape], align_corners=True)


def _elastic(aug: Augmentation, amplitude: np.ndarray, shape: tuple[int, ...], source: Sequence[int],
             in_plane: bool, generator: "torch.Generator") -> "torch.Tensor":
    """A smooth random displacement field in grid units: control points every ``elastic_grid`` voxels,
    Gaussian random displacements of std ``amplitude`` voxels, interpolated (bicubic 2D, trilinear 3D)."""
    import torch
    import torch.nn.functional as F

    count, dims = len(amplitude), len(shape)
    coarse = [max(2, math.ceil(n / aug.elastic_grid) + 1) for n in shape]
    field = torch.randn((count, dims, *coarse), generator=generator)
    field = F.interpolate(field, size=shape, mode="bicubic" if dims == 2 else "trilinear", align_corners=True)
    scale = torch.tensor(amplitude, dtype=torch.float32).view(count, 1, *[1] * dims)
    half = torch.tensor([max(n - 1, 1) / 2 for n in source], dtype=torch.float32).view(1, dims, *[1] * dims)
    field = field * scale / half  # voxels -> grid units
    if in_plane:
        field[:, 0] = 0.0
    return field.flip(1).movedim(1, -1)  # (B, *shape, dims), x first


def _centre(tensor: "torch.Tensor", shape: tuple[int, ...], lead: int) -> "torch.Tensor":
    starts = [(n - s) // 2 for n, s in zip(tensor.shape[lead:], shape)]
    return tensor[(slice(None),) * lead + tuple(slice(st, st + s) for st, s in zip(starts, shape))]


def _flip_turn(tensor: "torch.Tensor", flips: np.ndarray, turns: np.ndarray, lead: int) -> "torch.Tensor":
    """Per-sample flips along each axis and quarter turns in the last two axes (same convention as the grid)."""
    import torch

    out = []
    for b in range(tensor.shape[0]):
        t = tensor[b]
        axes = [lead - 1 + a for a in np.flatnonzero(flips[b])]
        if axes:
            t = torch.flip(t, axes)
        if turns[b]:
            t = torch.rot90(t, int(turns[b]), dims=(-2, -1))
        out.append(t)
    return torch.stack(out).contiguous()


# ---------------------------------------------------------------------------------------- intensity
def _intensity(aug: Augmentation, x: "torch.Tensor", rng: np.random.Generator, generator: "torch.Generator",
               in_plane: bool) -> "torch.Tensor":
    """Noise, blur, brightness, contrast, low resolution and gamma, each per sample with its probability."""
    import torch

    count = x.shape[0]
    view = (count,) + (1,) * (x.ndim - 1)
    spatial = tuple(range(2, x.ndim))
    drawn = {name: rng.random(count) < getattr(aug, name) for name in ("noise", "blur", "brightness", "contrast",
                                                                          "lowres", "gamma")}
    if drawn["noise"].any():
        std = torch.tensor(rng.uniform(*aug.noise_std, count) * drawn["noise"], dtype=x.dtype).view(view)
        x = x + torch.randn(x.shape, generator=generator).to(x) * std.to(x.device)
    if drawn["blur"].any():
        x = _blur(x, rng.uniform(*aug.blur_sigma, count) * drawn["blur"], in_plane)
    if drawn["brightness"].any():
        shift = rng.uniform(*aug.brightness_range, count) * drawn["brightness"]
        x = x + torch.tensor(shift, dtype=x.dtype, device=x.device).view(view) * x.std(dim=spatial, keepdim=True)
    if drawn["contrast"].any():
        factor = torch.tensor(np.where(drawn["contrast"], rng.uniform(*aug.contrast_range, count), 1.0),
                              dtype=x.dtype, device=x.device).view(view)
        mean = x.mean(dim=spatial, keepdim=True)
        low, high = x.amin(dim=spatial, keepdim=True), x.amax(dim=spatial, keepdim=True)
        x = torch.minimum(torch.maximum((x - mean) * factor + mean, low), high)
    if drawn["lowres"].any():
        x = _low_resolution(x, np.where(drawn["lowres"], rng.uniform(*aug.lowres_range, count), 1.0), in_plane)
    if drawn["gamma"].any():
        gamma = torch.tensor(np.where(drawn["gamma"], rng.uniform(*aug.gamma_range, count), 1.0),
                             dtype=x.dtype, device=x.device).view(view)
        low, high = x.amin(dim=spatial, keepdim=True), x.amax(dim=spatial, keepdim=True)
        span = (high - low).clamp_min(1e-6)
        x = ((x - low) / span).clamp(0, 1).pow(gamma) * span + low
    return x.contiguous()


def _blur(x: "torch.Tensor", sigmas: np.ndarray, in_plane: bool) -> "torch.Tensor":
    """Separable Gaussian blur, one sigma (voxels) per sample (0: unchanged); YX only when ``in_plane``."""
    import torch
    import torch.nn.functional as F

    count, channels, dims = x.shape[0], x.shape[1], x.ndim - 2
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    safe = np.maximum(sigmas, 1e-6)[:, None]
    kernels = np.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernels /= kernels.sum(axis=1, keepdims=True)
    weight = torch.tensor(np.repeat(kernels, channels, axis=0), dtype=x.dtype, device=x.device)
    conv = F.conv2d if dims == 2 else F.conv3d
    flat = x.reshape(1, count * channels, *x.shape[2:])
    for axis in range(1 if in_plane and dims == 3 else 0, dims):
        if x.shape[2 + axis] < 2:
            continue
        kernel_shape = [1] * dims
        kernel_shape[axis] = 2 * radius + 1
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        padded = F.pad(flat, pad, mode="replicate")
        flat = conv(padded, weight.view(count * channels, 1, *kernel_shape), groups=count * channels)
    return flat.reshape(x.shape)


def _low_resolution(x: "torch.Tensor", factors: np.ndarray, in_plane: bool) -> "torch.Tensor":
    """Nearest downsampling by ``factors`` (one per sample; 1: unchanged), linear upsampling back."""
    import torch.nn.functional as F

    shape = tuple(x.shape[2:])
    frozen = 1 if in_plane and len(shape) == 3 else 0
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    out = x.clone()
    for b in np.flatnonzero(factors < 1.0):
        small = shape[:frozen] + tuple(max(1, round(n * float(factors[b]))) for n in shape[frozen:])
        low = F.interpolate(x[b:b + 1], size=small, mode="nearest")
        out[b:b + 1] = F.interpolate(low, size=shape, mode=mode, align_corners=False)
    return out
