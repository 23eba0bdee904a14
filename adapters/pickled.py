"""Pickled adapter weights made safe to store: ``adapter_model.bin`` converted to safetensors.

The store refuses pickles (loading one can run arbitrary code); ``adapters import --allow-pickle``
converts them first, loading with ``torch.load(weights_only=True)``, which refuses any object that
is not a tensor or a plain container. torch is imported only here, when there is a pickle."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


def convert_pickled(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` with every adapter_model.bin replaced by adapter_model.safetensors;
    any other pickled file left is refused (a StoreError)."""
    from adapters_store import StoreError
    from adapters_store.files import PICKLE_SUFFIXES

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"))
    for path in sorted(dest.rglob("adapter_model.bin")):
        import torch
        from safetensors.torch import save_file

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError ...
            # torch's own text goes on to suggest weights_only=False, which would run the pickle's
            # code: only the object it refused is passed on.
            found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(exc))
            what = f" (it holds {found[1]}, not only tensors)" if found else ""
            raise StoreError(f"cannot load {path.relative_to(dest)} as plain weights{what}",
                             hint="where the file is trusted, load the adapter with peft and re-save it "
                             "with save_pretrained(..., safe_serialization=True)") from None
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise StoreError(f"{path.relative_to(dest)} is not a dict of tensors",
                             hint="re-save the adapter with save_pretrained()")
        out = path.with_suffix(".safetensors")
        if not out.exists():
            save_file({k: t.detach().contiguous().clone() for k, t in state.items()}, str(out),
                      metadata={"format": "pt"})
        path.unlink()
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.name.lower().endswith(PICKLE_SUFFIXES))
    if left:
        raise StoreError(f"only adapter_model.bin can be converted; still pickled: "
                         f"{', '.join(left)}", hint="remove those files or convert them yourself")
    return dest
