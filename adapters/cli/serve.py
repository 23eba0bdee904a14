"""``adapters serve``: load a base, preload adapters, run the HTTP server (uvicorn).

Settings come from ``--config FILE`` (YAML, see configs/serve-smollm2.yaml), then the flags given
on the command line override them. The API key is best passed as ``ADAPTERS_API_KEY``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.cli.options import StoreOpt
from adapters.config import ComputeDtypeKind, QuantKind
from adapters.server.limits import Limits


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str
    quant: QuantKind = "4bit"
    device: str = "auto"
    compute_dtype: ComputeDtypeKind = "auto"
    adapters: list[str] = Field(default_factory=list, description="store refs to preload")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None
    allowed_hosts: list[str] | None = Field(
        None, description="Host header values answered; default: loopback names when bound to a loopback "
        "address, else any; ['*']: any")
    store: str | None = None
    served_name: str | None = None
    max_adapters: int = Field(64, ge=1)
    max_bytes: int = Field(2**30, ge=1)
    log_level: str = "info"
    limits: Limits = Field(default_factory=Limits)


def load_serve_config(path: Path | None, overrides: dict[str, Any]) -> ServeConfig:
    from adapters.config import read_yaml
    from adapters.errors import ConfigError

    raw: dict[str, Any] = dict(read_yaml(path)) if path else {}
    limits = dict(raw.get("limits") or {})
    for key, value in overrides.items():
        if value is None or value == []:
            continue
        if key in Limits.model_fields:
            limits[key] = value
        else:
            raw[key] = value
    raw["limits"] = limits
    if not raw.get("base"):
        raise ConfigError("no base model to serve", "pass --base NAME or a --config file with `base:`")
    try:
        return ServeConfig(**raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"invalid serve config{f' {path}' if path else ''}: {problems}",
                          "see configs/serve-smollm2.yaml for every key") from None


def check_before_loading(cfg: ServeConfig) -> None:
    """What can be checked in milliseconds, before the seconds of loading torch and the base:
    the base name, every preloaded ref in the store, and that the port is free to bind."""
    import socket

    from adapters.base.resolve import check_base
    from adapters.errors import UsageError
    from adapters.runtime.resolvers import UnknownAdapterError, store_resolver
    from adapters_store.errors import StoreError

    check_base(cfg.base)
    resolve = store_resolver(cfg.store)
    for ref in cfg.adapters:
        try:
            resolve(ref)
        except (UnknownAdapterError, StoreError) as exc:
            raise UsageError(f"cannot preload adapter '{ref}': {exc.message}",
                             exc.hint or "check `adapters list`") from None
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((cfg.host, cfg.port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}",
                             "pass another --port (or stop what uses this one)") from None


def build(cfg: ServeConfig):
    """The engine (adapters preloaded) and the app for a config."""
    from adapters.errors import UsageError
    from adapters.runtime import Engine
    from adapters.runtime.resolvers import store_resolver
    from adapters.server.app import create_app, looks_like_path

    for ref in cfg.adapters:
        if looks_like_path(ref):
            raise UsageError(f"--adapter '{ref}' looks like a path; the server loads adapters by store ref only",
                             "store it first: `adapters import DIR NAME`, then pass NAME")
    engine = Engine(cfg.base, quant=cfg.quant, device=cfg.device, compute_dtype=cfg.compute_dtype,
                    max_adapters=cfg.max_adapters, max_bytes=cfg.max_bytes, resolver=store_resolver(cfg.store))
    for ref in cfg.adapters:
        try:
            engine.load(ref)
        except UsageError:
            raise
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            raise UsageError(f"cannot preload adapter '{ref}': {message}",
                             getattr(exc, "hint", None) or "check `adapters list`") from None
    app = create_app(engine, api_key=cfg.api_key, limits=cfg.limits, store_root=cfg.store, served_name=cfg.served_name,
                     allowed_hosts=cfg.allowed_hosts)
    return engine, app


def serve(
    base: str | None = typer.Option(None, "--base", help="Base model: a built-in name, a directory or an HF id."),
    adapter: list[str] = typer.Option([], "--adapter", "-a", help="A store ref to preload (repeatable)."),
    quant: str | None = typer.Option(None, "--quant", help="4bit | 8bit | none (default 4bit)."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (default auto)."),
    compute_dtype: str | None = typer.Option(None, "--compute-dtype",
                                                help="auto | float32 | bfloat16 | float16 (default auto: "
                                                "the fastest measured for the device)."),
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8000)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="ADAPTERS_API_KEY", show_envvar=True,
                                          help="Require 'Authorization: Bearer KEY' on /v1."),
    config: Path | None = typer.Option(None, "--config", help="A serve config (YAML)."),
    store: Path | None = StoreOpt,
    served_name: str | None = typer.Option(None, "--served-name", help="The base's model name in the API."),
    max_adapters: int | None = typer.Option(None, "--max-adapters", help="Most adapters resident (default 64)."),
    max_bytes: int | None = typer.Option(None, "--max-bytes",
                                         help="Most bytes resident adapters may hold (LoRA matrices as held, "
                                         "prefixes, heads; default 1 GiB); the least recently used are evicted."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Most tokens one completion may generate."),
    max_prompt_tokens: int | None = typer.Option(None, "--max-prompt-tokens", help="Longest prompt in tokens."),
    max_batch_size: int | None = typer.Option(None, "--max-batch-size", help="Rows per engine call."),
    max_wait_ms: float | None = typer.Option(None, "--max-wait-ms", help="How long a batch waits to fill."),
    max_queue: int | None = typer.Option(None, "--max-queue", help="Rows waiting before 503s."),
    max_body_bytes: int | None = typer.Option(None, "--max-body-bytes",
                                                 help="Largest request body in bytes; beyond: 413 (default 4 MiB)."),
    allowed_hosts: str | None = typer.Option(
        None, "--allowed-hosts", help="Comma-separated Host header values to answer (e.g. "
        "'localhost,my-box.lan', '*.example.org', or '*' for any). Default: only localhost, 127.0.0.1 and [::1] "
        "when bound to a loopback address (a guard against DNS rebinding), any otherwise."),
    log_level: str | None = typer.Option(None, "--log-level", help="uvicorn log level (default info)."),
) -> None:
    """Serve adapters over an OpenAI-compatible HTTP API (one resident base, many adapters)."""
    import uvicorn

    overrides = {"base": base, "adapters": list(adapter), "quant": quant, "device": device,
                 "compute_dtype": compute_dtype, "host": host,
                 "port": port, "api_key": api_key or os.environ.get("ADAPTERS_API_KEY") or None,
                 "store": str(store) if store else None, "served_name": served_name, "max_adapters": max_adapters,
                 "max_bytes": max_bytes, "max_tokens": max_tokens,
                 "max_prompt_tokens": max_prompt_tokens, "max_batch_size": max_batch_size,
                 "max_wait_ms": max_wait_ms, "max_queue": max_queue, "max_body_bytes": max_body_bytes,
                 "allowed_hosts": [h.strip() for h in allowed_hosts.split(",") if h.strip()] if allowed_hosts else None,
                 "log_level": log_level}
    cfg = load_serve_config(config, overrides)
    check_before_loading(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        typer.echo(f"warning: binding {cfg.host} without an API key; anyone who can reach it can use it "
                   "(set ADAPTERS_API_KEY)", err=True)
    _, app = build(cfg)
    # uvicorn stops gracefully on SIGTERM (in-flight requests answered), then raises the signal
    # again for the handler it found: make that handler end the process with 0, a clean exit.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
