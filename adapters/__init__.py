"""adapter-manager: train, store and serve LoRA and prefix adapters on one quantized base.

    import adapters
    result = adapters.train("configs/rt-minilm-lora.yaml")
    clf = adapters.load("minilm-l6", result.output_dir)
    clf.predict(["a gripping, beautifully acted film"])

    engine = adapters.Engine("minilm-l6", quant="4bit")   # one base, many adapters, mixed batches
    engine.classify(["great", "awful"], adapters=["rt-minilm-lora@1", "rt-minilm-prefix@1"])

Heavy libraries load on first use, so ``import adapters`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["train", "load", "merge", "cross_validate", "distill", "Engine", "TrainConfig", "load_config",
           "AdaptersError"]

import logging

from adapters.errors import AdaptersError

# On AVX512-BF16 CPUs bitsandbytes tries, at import, to fetch an optional CPU kernel from the
# Hugging Face hub (the `kernels` package) and warns on every run when it cannot. That kernel only
# serves the repacked inference layout, which adapters.base.device.keep_4bit_layout turns off, and this
# project never downloads at run time: the warning says nothing a user can act on.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def __getattr__(name: str):
    if name in ("train", "load", "merge", "cross_validate", "distill"):
        from adapters import api
        return getattr(api, name)
    if name == "Engine":
        from adapters.runtime import Engine

        return Engine
    if name in ("TrainConfig", "load_config"):
        from adapters import config
        return getattr(config, name)
    raise AttributeError(f"module 'adapters' has no attribute {name!r}")
