"""Serve many adapters from one resident base: hot-swap, LRU cache, mixed LoRA/prefix batches.

    from adapters.runtime import Engine
    engine = Engine("smollm2-135m", quant="4bit")
    engine.generate(["hi", "hi"], adapters=["chat@prod", None])

The constants, ``GenerationRequest`` and ``store_resolver`` import without torch (the TUI and the
CLI read them); ``Engine`` and ``GenerationResult`` load torch on first use.
"""

from adapters.runtime.cache import BASE, FAILED, LOADING, READY, AdapterInfo, CacheFullError
from adapters.runtime.requests import GenerationRequest
from adapters.runtime.resolvers import UnknownAdapterError, store_resolver

__all__ = ["Engine", "AdapterInfo", "GenerationRequest", "GenerationResult", "UnknownAdapterError",
           "CacheFullError", "store_resolver", "BASE", "LOADING", "READY", "FAILED"]


def __getattr__(name: str):
    if name == "Engine":
        from adapters.runtime.engine import Engine

        return Engine
    if name == "GenerationResult":
        from adapters.runtime.generate import GenerationResult

        return GenerationResult
    raise AttributeError(f"module 'adapters.runtime' has no attribute {name!r}")
