"""Device and quantization choices: one code path for CPU and CUDA.

4-bit is NF4 with double quantization; the compute dtype follows the device, because bf16 compute
on a CPU without native bf16 is 3-15x slower than fp32 (measured on AVX2). Task heads stay
unquantized: bitsandbytes crashes quantizing a freshly initialized classifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from adapters.errors import DeviceError


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" | "cuda"
    compute_dtype: torch.dtype


def cpu_has_fast_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def plan_device(requested: str = "auto") -> DevicePlan:
    if requested not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"unknown device '{requested}'", "use auto, cpu or cuda")
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise DeviceError("CUDA was asked for, but this machine has no usable GPU",
                          "set device: auto (or cpu) to train on the CPU through the same code")
    device = "cuda" if (requested == "cuda" or (requested == "auto" and cuda)) else "cpu"
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return DevicePlan(device, dtype)


def quantization_config(quant: str, plan: DevicePlan, skip_modules: list[str]):
    """A BitsAndBytesConfig for ``quant`` (or None for full precision)."""
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    # 8-bit matmuls on CPU warn on every call that inputs are cast; the cast is expected.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
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
