"""Device and quantization choices: one code path for CPU and CUDA.

4-bit is NF4 with double quantization. Task heads stay unquantized: bitsandbytes crashes
quantizing a freshly initialized classifier.

The compute dtype follows the device, chosen by measurement. On a CPU without native bf16 (AVX2
only), bf16 compute is 3-15x slower than fp32 (MiniLM forward, batch 32: 251 ms vs 55 ms). On a
CPU with AVX512-BF16 it is the fastest, as long as bitsandbytes keeps its own weight layout
(bitsandbytes 0.50.2, one thread, a 384->1536 NF4 layer, 1,536 rows):

    compute  repacked  AMD EPYC (AVX512-BF16)     Intel Xeon (AVX512-BF16 + AMX)
                       train fwd+bwd  eval fwd    train fwd+bwd  eval fwd
    fp32     no        136 ms         82 ms       32 ms          14 ms
    fp32     yes       -              33 ms       -              32 ms
    bf16     no         44 ms         18 ms       11 ms           6 ms
    bf16     yes       -              31 ms       -              33 ms

``benchmarks cpu`` measures the same choice on MiniLM training and engine classification.

bitsandbytes repacks a ``Linear4bit``'s weight for a CPU inference kernel on its first eval-mode,
no-grad forward when the CPU has AVX512-BF16. The packed layer is slower (above), breaks training
afterwards (an in-place ``result += bias`` on a leaf), fails on output sizes that are not a
multiple of 32, and its outputs differ from the unpacked layer's. ``keep_4bit_layout`` turns it off
for every model this project builds, so one layout runs on every CPU kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.errors import DeviceError


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" | "cuda"
    compute_dtype: torch.dtype


# What ``compute_dtype`` may say in configs and calls; "auto" is the measured choice per device.
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), from ``/proc/cpuinfo`` or the
    text given."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def plan_device(requested: str = "auto", compute_dtype: str = "auto") -> DevicePlan:
    """The device and the compute dtype of quantized layers: ``compute_dtype="auto"`` picks the
    fastest measured one for the device (module docstring); a name from ``COMPUTE_DTYPES`` fixes it."""
    if requested not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"unknown device '{requested}'", "use auto, cpu or cuda")
    if compute_dtype != "auto" and compute_dtype not in COMPUTE_DTYPES:
        raise DeviceError(f"unknown compute dtype '{compute_dtype}'", f"use auto, {', '.join(COMPUTE_DTYPES)}")
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise DeviceError("CUDA was asked for, but this machine has no usable GPU",
                          "set device: auto (or cpu) to train on the CPU through the same code")
    device = "cuda" if (requested == "cuda" or (requested == "auto" and cuda)) else "cpu"
    if compute_dtype != "auto":
        dtype = COMPUTE_DTYPES[compute_dtype]
    elif device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return DevicePlan(device, dtype)


def keep_4bit_layout(model) -> int:
    """Keep bitsandbytes' own 4-bit layout in every ``Linear4bit`` of ``model``: never repack it for
    the CPU inference kernel. Call it before the model's first forward (``load_base_model`` does):
    undoing a repacking is not exact (the packed layout keeps its scales in bf16). Returns the
    number of 4-bit layers."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def is_repacked(layer) -> bool:
    """Whether a bitsandbytes ``Linear4bit`` holds its weight in the CPU inference layout."""
    return bool(getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False))


def quantization_config(quant: str, plan: DevicePlan, skip_modules: list[str]):
    """A BitsAndBytesConfig for ``quant`` (or None for full precision)."""
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    from adapters.base.quiet import quiet_bitsandbytes

    # 8-bit matmuls on CPU warn on every call that inputs are cast; the cast is expected.
    quiet_bitsandbytes()
    if quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=plan.compute_dtype,
            bnb_4bit_quant_storage=torch.uint8,
            llm_int8_skip_modules=skip_modules or None,
        )
    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules or None)
    raise DeviceError(f"unknown quantization '{quant}'", "use 4bit, 8bit or none")
