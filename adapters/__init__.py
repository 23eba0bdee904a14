"""adapter-manager: train, store and serve LoRA and prefix adapters on one quantized base.

    import adapters
    result = adapters.train("configs/rt-minilm-lora.yaml")
    clf = adapters.load("minilm-l6", result.output_dir)
    clf.predict(["a gripping, beautifully acted film"])

Heavy libraries load on first use, so ``import adapters`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["train", "load", "TrainConfig", "load_config", "AdaptersError"]

from adapters.errors import AdaptersError


def __getattr__(name: str):
    if name in ("train", "load"):
        from adapters import api

        return getattr(api, name)
    if name in ("TrainConfig", "load_config"):
        from adapters import config

        return getattr(config, name)
    raise AttributeError(f"module 'adapters' has no attribute {name!r}")
