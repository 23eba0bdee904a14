"""``adapters serve``: an OpenAI-compatible HTTP server over one resident base and many adapters.

    from adapters.runtime import Engine
    from adapters.server import Limits, create_app, store_resolver
    engine = Engine("smollm2-135m", quant="4bit", resolver=store_resolver())  # store refs only, no paths
    app = create_app(engine, api_key=None, limits=Limits())
"""

__all__ = ["Limits", "create_app", "looks_like_path", "store_resolver"]


def __getattr__(name: str):
    # FastAPI is imported on first use, not when the CLI registers `adapters serve`.
    if name in __all__:
        from adapters.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'adapters.server' has no attribute {name!r}")
