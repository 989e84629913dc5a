"""Numerical precision of the network's forward pass: bf16/fp16 autocast where the device does it fast.

``precision`` is ``"auto"``, ``"bf16"``, ``"fp16"`` (CUDA only) or ``"fp32"``. :func:`resolve_precision`
turns it into a :class:`Precision` for a device:

* ``auto`` on CUDA: bf16 where the GPU supports it (Ampere and later), else fp16 (with loss scaling);
* ``auto`` on CPU: bf16 where the CPU computes it natively (AVX-512 BF16, AMX or Arm BF16;
  :func:`cpu_supports_bf16`), else fp32; on MPS and other devices: fp32.

Only the network runs under autocast; logits are cast back to float32 before the softmax, the loss and
the blending of tiles, so probabilities and losses are accumulated in fp32. :func:`configure_device`
turns on cuDNN's autotuner for CUDA.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterable

import torch

from .errors import InputError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: /proc/cpuinfo flags meaning native bf16 arithmetic (x86: AVX-512 BF16, AMX; Arm: BF16 extension)
_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` ("bf16", "fp16" or "fp32") on device type ``device_type``."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def enabled(self) -> bool:
        """Whether the forward pass runs under autocast (anything but fp32)."""
        return self.name != "fp32"

    def __bool__(self) -> bool:
        return self.enabled

    def autocast(self) -> ContextManager[Any]:
        """The autocast context of the forward pass (a no-op for fp32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler | None":
        """A loss scaler for fp16 training on CUDA (fp16 gradients underflow); None otherwise."""
        if self.name == "fp16" and self.device_type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
                   max_norm: float, scaler: "torch.amp.GradScaler | None" = None) -> None:
    """Backward pass, gradient clipping to ``max_norm`` and optimizer step, through ``scaler`` when given."""
    params = list(parameters)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)
    scaler.update()


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (oneDNN's check, else the /proc/cpuinfo flags)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except (RuntimeError, AttributeError):  # not built with oneDNN
            pass
    return bool(_cpuinfo_flags() & _CPU_BF16_FLAGS)


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cuda_supports_bf16(device: torch.device | str | int) -> bool:
    """Whether CUDA ``device`` computes bf16 natively: compute capability 8.0 (Ampere) or later.

    Not ``torch.cuda.is_bf16_supported()``: it also counts emulation, and cuDNN has no bf16 convolutions
    before Ampere (V100, T4, RTX 20xx).
    """
    return bool(torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8)


def _describe_gpu(device: torch.device | str | int) -> str:
    """``device`` with its name and compute capability, for messages (what is known of it)."""
    if not torch.cuda.is_available():
        return f"{device} (no CUDA device available)"
    try:
        major, minor = torch.cuda.get_device_capability(device)
        return f"{device} ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor})"
    except (AssertionError, RuntimeError, AttributeError):  # torch without CUDA, no driver
        return f"{device} (no CUDA device available)"


def check_precision(precision: str | None) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` (None means "auto"); InputError otherwise."""
    value = "auto" if precision is None else str(precision).lower()
    if value not in PRECISIONS:
        raise InputError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return value


def resolve_precision(precision: str | None, device: torch.device | str) -> Precision:
    """The :class:`Precision` that ``precision`` means on ``device`` (see the module docstring).

    An explicit ``bf16`` on a CPU without native bf16 still runs (emulated, slower), with a warning;
    ``fp16`` is refused except on CUDA, and any reduced precision except on CPU and CUDA.
    """
    value = check_precision(precision)
    kind = torch.device(device).type
    if value == "fp32":
        return Precision("fp32", kind)
    if kind == "cuda":
        if value == "auto":
            return Precision("bf16" if cuda_supports_bf16(device) else "fp16", kind)
        if value == "bf16" and not cuda_supports_bf16(device):
            raise InputError(f"precision='bf16': GPU {_describe_gpu(device)} has no bf16 convolutions (needs compute "
                             "capability 8.0, Ampere or later); use 'fp16', 'auto' or 'fp32'")
        return Precision(value, kind)
    if kind == "cpu":
        if value == "auto":
            return Precision("bf16" if cpu_supports_bf16() else "fp32", kind)
        if value == "bf16":
            if not cpu_supports_bf16():
                warnings.warn("precision='bf16': this CPU has no native bf16 (AVX-512 BF16/AMX); it is emulated "
                              "and slower than fp32", UserWarning, stacklevel=2)
            return Precision("bf16", kind)
    if value == "auto":
        return Precision("fp32", kind)
    raise InputError(f"precision={precision!r} is not available on device {kind!r}: use 'auto' or 'fp32'"
                     + (" ('fp16' needs CUDA)" if value == "fp16" and kind == "cpu" else ""))


def as_precision(value: Precision | bool | str | None, device: torch.device | str) -> Precision:
    """``value`` as a :class:`Precision` on ``device``: a Precision, a name, or a bool (True: "auto", False: "fp32")."""
    if isinstance(value, Precision):
        return value
    if isinstance(value, bool):
        value = "auto" if value else "fp32"
    return resolve_precision(value, device)


def guard_cpu_bf16(network: torch.nn.Module) -> torch.nn.Module:
    """Run in fp32 the 3D convolutions that CPU bf16 training gets wrong; returns ``network``.

    oneDNN's bf16 Conv3d weight gradient is garbage (up to 1e36) when the input is shallower than the
    kernel along the first spatial axis (e.g. 2 planes, kernel 3: the coarse levels of 3D U-Nets on
    thin patches; measured with torch 2.13). Under CPU bf16 autocast with gradients on, such a
    convolution runs with autocast off on an fp32 input. Idempotent; costs nothing elsewhere.
    """
    for module in network.modules():
        if isinstance(module, torch.nn.Conv3d) and not getattr(module, "_deepseg_bf16_guard", False):
            module.register_forward_pre_hook(_fp32_if_shallow)
            module.register_forward_hook(_restore_autocast)
            module._deepseg_bf16_guard = True
    return network


def _fp32_if_shallow(module: torch.nn.Conv3d, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0]
    if not (torch.is_grad_enabled() and torch.is_autocast_enabled("cpu") and x.device.type == "cpu"
            and x.shape[2] < module.kernel_size[0]):
        return None
    module._deepseg_autocast_was = True
    torch.set_autocast_enabled("cpu", False)
    return (x.float(), *args[1:])


def _restore_autocast(module: torch.nn.Conv3d, args: tuple[Any, ...], output: Any) -> None:
    if getattr(module, "_deepseg_autocast_was", False):
        module._deepseg_autocast_was = False
        torch.set_autocast_enabled("cpu", True)


def configure_device(device: torch.device | str) -> None:
    """Device-wide settings for speed: cuDNN's autotuner on CUDA (fixed patch shapes benefit)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def channels_last(network: torch.nn.Module) -> torch.nn.Module:
    """Store the weights of a network marked ``channels_last_is_fast`` (the U-Nets) channels-last (NHWC / NDHWC),
    in place; returns ``network``.

    oneDNN (CPU) and cuDNN pick their fast convolution kernels for this layout, and activations follow the
    weights' layout. Measured on this 2-core CPU, 1 thread: bf16 inference 35 % (2D U-Net, 4x256²) and 24 %
    (3D U-Net, 32x128²) faster, fp32 inference 37 % / 13 %, bf16 training 18 % / 15 %. Values are unchanged
    (weights are saved contiguous: :func:`engine.model_files.save_model`).
    """
    layout = {2: torch.channels_last, 3: torch.channels_last_3d}.get(int(getattr(network, "spatial_dims", 0)))
    if layout is None or not getattr(network, "channels_last_is_fast", False):  # U-Nets; not DeepLab (measured
        return network  # worse training there), nor an ONNX session
    return network.to(memory_format=layout)
