"""Serve many adapters from one resident base: hot-swap, LRU cache, mixed LoRA/prefix batches.

    from adapters.runtime import Engine
    engine = Engine("smollm2-135m", quant="4bit")
    engine.generate(["hi", "hi"], adapters=["chat@prod", None])
"""

from adapters.runtime.cache import FAILED, LOADING, READY, AdapterInfo, CacheFullError
from adapters.runtime.engine import BASE, Engine, UnknownAdapterError
from adapters.runtime.generate import GenerationResult

__all__ = ["Engine", "AdapterInfo", "GenerationResult", "UnknownAdapterError", "CacheFullError", "BASE",
           "LOADING", "READY", "FAILED"]
