"""``adapters serve``: an OpenAI-compatible HTTP server over one resident base and many adapters.

    from adapters.runtime import Engine
    from adapters.server import Limits, create_app, store_resolver
    engine = Engine("smollm2-135m", quant="4bit", resolver=store_resolver())
    app = create_app(engine, api_key=None, limits=Limits())
"""

from adapters.server.app import Limits, create_app, looks_like_path, store_resolver

__all__ = ["Limits", "create_app", "looks_like_path", "store_resolver"]
