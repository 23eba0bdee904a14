"""Helpers for tests: PEFT-looking adapter directories written with the stdlib only (a real
adapter_config.json and a real, hand-written safetensors file): store tests need no torch/numpy."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def write_safetensors(path: str | Path, tensors: dict[str, bytes], *,
                      dtype: str = "U8", metadata: dict[str, str] | None = None) -> Path:
    """Write a valid safetensors file whose tensors are 1-D byte arrays (``dtype`` U8)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": dtype, "shape": [len(data)],
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in tensors.values():
            f.write(data)
    return path


def make_adapter_dir(path: str | Path, *, payload: bytes = b"\x00" * 64, base: str = "tiny-base",
                     peft_type: str = "LORA", task_type: str = "SEQ_CLS", r: int = 8,
                     extra_config: dict[str, Any] | None = None,
                     extra_files: dict[str, bytes] | None = None) -> Path:
    """A directory shaped like peft's save_pretrained output."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"base_model_name_or_path": base, "peft_type": peft_type, "task_type": task_type,
              "r": r, "lora_alpha": 2 * r, "target_modules": ["query", "value"],
              **(extra_config or {})}
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    half = len(payload) // 2
    write_safetensors(path / "adapter_model.safetensors",
                      {"base_model.model.lora_A.weight": payload[:half] or b"\x00",
                       "base_model.model.lora_B.weight": payload[half:] or b"\x00"},
                      metadata={"format": "pt"})
    for rel, data in (extra_files or {}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path
