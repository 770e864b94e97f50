"""Device choice, mixed precision, peak FLOP/s and model FLOPs utilisation (MFU).

Nothing here touches CUDA at import time: a Celery worker forks after importing us, and a CUDA
context created before the fork is unusable in the child. CUDA is queried only inside functions.

MFU = achieved model FLOP/s / peak FLOP/s of the chip. For known GPUs the peak is the vendor's dense
bf16 tensor-core number; elsewhere (CPUs, unknown GPUs) it is the FLOP/s of a large matmul measured
once per process, so a CPU run's MFU reads as "share of what this machine's matmul can do".
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import ContextManager

import torch

# Dense (no sparsity) bf16 tensor-core peaks from the vendor data sheets, matched against
# torch.cuda.get_device_name(). Order matters: more specific names first ("H100 PCIe" before "H100").
KNOWN_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),   # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),   # same compute die as the H100 SXM, more and faster memory
    ("GH200", 989e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
]
PEAK_FLOPS = KNOWN_PEAK_FLOPS  # the name docs/architecture.md uses

_MEASURED_PEAK: dict[tuple[str, torch.dtype], float] = {}  # per process: measuring costs seconds on a CPU

DTYPES = {"float32": torch.float32, "fp32": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(requested: str | torch.device = "auto") -> torch.device:
    """"auto" means CUDA when a GPU is visible, else the CPU; "cuda" without a GPU is an error."""
    requested = str(requested).lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is visible to PyTorch; "
                         "use device 'auto' or 'cpu'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {requested!r}; use 'auto', 'cpu' or 'cuda'")
    return device


def resolve_dtype(device: torch.device, dtype: str | torch.dtype = "auto") -> torch.dtype:
    """The compute dtype for autocast: bf16 on GPUs that have it, float32 on the CPU.

    float16 is refused: it needs a gradient scaler, and every GPU worth training on has bf16.
    """
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        # Native bf16 only: pre-Ampere GPUs (V100, T4) emulate it, slower than float32.
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
        resolved = torch.bfloat16 if bf16_ok else torch.float32
    elif dtype in DTYPES:
        resolved = DTYPES[dtype]
    else:
        raise ValueError(f"unsupported dtype {dtype!r}; use 'auto', 'float32' or 'bfloat16'")
    if resolved not in (torch.float32, torch.bfloat16):
        raise ValueError(f"unsupported dtype {resolved}; use float32 or bfloat16 (float16 needs a grad scaler)")
    return resolved


def autocast_context(device: torch.device | str, dtype: str | torch.dtype = "auto") -> ContextManager:
    """bf16 autocast on CUDA by default; on the CPU a no-op unless bf16 is asked for explicitly."""
    device = torch.device(device)
    resolved = resolve_dtype(device, dtype)
    if resolved == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=resolved)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_matmul_peak_flops(device: torch.device | str, size: int | None = None,
                              dtype: torch.dtype | None = None, repeats: int = 5) -> float:
    """Median FLOP/s of a square `torch.mm` measured now (2 * size^3 FLOPs per product).

    Defaults: 8192 x 8192 bf16 on a GPU (big enough to saturate the tensor cores), 2048 x 2048 float32
    on a CPU (about 17 GFLOP: a fraction of a second, yet long enough to time reliably).
    """
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    size = size or (8192 if on_gpu else 2048)
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    # A generator of its own: measuring must not move the global RNG a training run was just seeded with
    # (the first run in a process measures, later ones use the cache; they must draw the same dropout).
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: kernel selection, thread pool start
    _synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(seconds)


def known_peak_flops(device_name: str) -> float | None:
    """The data-sheet dense bf16 peak for a GPU name such as "NVIDIA H100 80GB HBM3", or None."""
    name = device_name.upper()
    for key, flops in KNOWN_PEAK_FLOPS:
        if key in name:
            return flops
    return None


def peak_flops(device: torch.device | str) -> float:
    """Peak FLOP/s to divide by for MFU: the data-sheet number for known GPUs, else measured (cached)."""
    device = torch.device(device)
    if device.type == "cuda":
        known = known_peak_flops(torch.cuda.get_device_name(device))
        if known is not None:
            return known
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    key = (str(device), dtype)
    if key not in _MEASURED_PEAK:
        _MEASURED_PEAK[key] = measure_matmul_peak_flops(device, dtype=dtype)
    return _MEASURED_PEAK[key]


def mfu(flops_per_token: float, tokens_per_s: float, peak: float) -> float:
    """Model FLOPs utilisation as a fraction (0.41 = 41%): achieved model FLOP/s over peak FLOP/s."""
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak}")
    return flops_per_token * tokens_per_s / peak
