"""``adapters doctor``: what a bug report needs, in one paste.

Library versions, the CPU features that change code paths (AVX2, AVX512-BF16, AMX), CUDA devices,
the compute dtype and 4-bit path this machine gets, where the store, runs and base cache live,
and whether the installed packages match ``requirements.lock``.

Every probe runs on its own: one that fails reports its error text in its own field, so a broken
install (the usual reason to run doctor) still gets a full report and exit code 0. Versions come
from ``importlib.metadata``; torch, transformers and bitsandbytes are imported only by the probes
that need them (CUDA, the device plan, the 4-bit config), inside functions, so registering the
command keeps ``adapters --help`` free of torch.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from adapters.cli.store import JsonOpt, StoreOpt

# The libraries whose versions decide behaviour (DESIGN.md, "Known traps"), by distribution name.
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "textual")
DISTRIBUTION = "adapter-manager"
# CPU flags (as /proc/cpuinfo spells them) that switch code paths: bf16 compute, bitsandbytes'
# CPU repacking, torch's AMX kernels.
CPU_FLAGS = ("avx2", "avx512_bf16", "amx_bf16", "amx_tile")
CPUINFO = Path("/proc/cpuinfo")
LOCK_NAME = "requirements.lock"
_DEFAULT = object()


def _probe(fn: Callable[[], dict]) -> dict:
    """Run one probe; a failure becomes ``{"error": "Type: message"}`` in its own field."""
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - doctor reports, it never crashes
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"error": _error_text(exc)}


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# versions and platform


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        from adapters import __version__
        return f"{__version__} (not installed)"


def system() -> dict:
    return {"platform": platform.platform(), "system": platform.system(),
            "machine": platform.machine(), "python_executable": sys.executable}


# ---------------------------------------------------------------------------------------------
# CPU


def cpu_info(cpuinfo: Path = CPUINFO) -> dict:
    """CPU model, usable cores and the flags in CPU_FLAGS, read from ``cpuinfo``.

    Flags are None (unknown) where the file is absent or lists no flags (non-Linux)."""
    info: dict[str, Any] = {"model": platform.processor() or None, "cores": os.cpu_count(),
                            "flags": {flag: None for flag in CPU_FLAGS}, "source": None}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError as exc:
        info["source"] = f"{cpuinfo} unavailable: {exc.strerror or exc}"
        return info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())  # the first processor is enough
    info["model"] = (fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
                     or info["model"])
    flags = fields.get("flags") or fields.get("features")  # x86 | arm
    if flags is None:
        info["source"] = f"{cpuinfo} lists no flags"
        return info
    present = set(flags.split())
    info["flags"] = {flag: flag in present for flag in CPU_FLAGS}
    info["source"] = str(cpuinfo)
    return info


# ---------------------------------------------------------------------------------------------
# CUDA, device plan, 4-bit path (these import torch)


def cuda_info() -> dict:
    import torch

    info: dict[str, Any] = {"torch_cuda": torch.version.cuda, "available": False, "devices": []}
    if not torch.cuda.is_available():
        return info
    info["available"] = True
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        info["devices"].append({"index": index, "name": props.name,
                                "capability": f"{props.major}.{props.minor}",
                                "memory_gib": round(props.total_memory / 2**30, 1)})
    return info


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def compute_plan() -> dict:
    import torch

    from adapters.base.device import cpu_has_fast_bf16, plan_device

    plan = plan_device("auto")
    if plan.device == "cuda":
        why = "GPU supports bf16" if _dtype_name(plan.compute_dtype) == "bfloat16" else "GPU without bf16"
    elif cpu_has_fast_bf16():
        why = "CPU has AVX512-BF16 or AMX"
    else:
        why = "CPU without native bf16, where bf16 is several times slower"
    return {"device": plan.device, "compute_dtype": _dtype_name(plan.compute_dtype), "why": why,
            "torch_threads": torch.get_num_threads()}


def four_bit() -> dict:
    """The 4-bit config the project builds for this device, and its layer layout."""
    import torch

    from adapters.base.device import plan_device, quantization_config

    cfg = quantization_config("4bit", plan_device("auto"), [])
    kind = str(cfg.bnb_4bit_quant_type).upper()
    return {"quant_type": kind, "double_quant": bool(cfg.bnb_4bit_use_double_quant),
            "compute_dtype": _dtype_name(cfg.bnb_4bit_compute_dtype),
            "storage": _dtype_name(getattr(cfg, "bnb_4bit_quant_storage", torch.uint8)),
            # adapters.base.device.keep_4bit_layout, applied to every model the project loads.
            "layout": "bitsandbytes layout kept (CPU repacking off)"}


def bitsandbytes_info() -> dict:
    """Whether bitsandbytes itself would repack 4-bit weights for its CPU kernel here."""
    from importlib.metadata import version

    bnb_logger = logging.getLogger("bitsandbytes")
    level = bnb_logger.level
    # On AVX512-BF16 CPUs the import logs that it cannot fetch a gemm kernel from the hub.
    bnb_logger.setLevel(logging.ERROR)
    try:
        from bitsandbytes.functional import has_avx512bf16
        from bitsandbytes.nn import Linear4bit

        repack = bool(has_avx512bf16())
    finally:
        bnb_logger.setLevel(level)
    return {"version": version("bitsandbytes"), "would_repack_on_cpu": repack,
            "repack_switch": hasattr(Linear4bit(8, 8), "support_avx512bf16_for_cpu")}


# ---------------------------------------------------------------------------------------------
# paths


def paths(store: Path | None = None) -> dict:
    """Store, runs and base cache as the CLI resolves them; doctor never creates them."""
    from adapters.base.resolve import cache_dir
    from adapters.training import runs as project_paths

    root = project_paths.home(store)
    runs = project_paths.runs_dir(store)
    cache = cache_dir()
    if store:
        store_from = "--store"
    elif os.environ.get("ADAPTERS_HOME"):
        store_from = "$ADAPTERS_HOME"
    else:
        store_from = "user data dir"
    cache_from = "$ADAPTERS_CACHE" if os.environ.get("ADAPTERS_CACHE") else "user cache dir"
    return {"store": {"path": str(root), "from": store_from, "exists": root.is_dir()},
            "runs": {"path": str(runs), "from": "in the store", "exists": runs.is_dir()},
            "base_cache": {"path": str(cache), "from": cache_from, "exists": cache.is_dir()}}


# ---------------------------------------------------------------------------------------------
# requirements.lock


def default_lock() -> Path | None:
    """``requirements.lock`` beside the package in a source checkout; None for a wheel install."""
    import adapters

    candidate = Path(adapters.__file__).resolve().parent.parent / LOCK_NAME
    return candidate if candidate.is_file() else None


def read_lock(text: str) -> list[tuple[str, str, Any]]:
    """(name, pinned version, Requirement) for each ``name==version`` line of a pip-tools lock
    whose environment marker applies here. Hash, comment and option lines are skipped."""
    from packaging.requirements import InvalidRequirement, Requirement

    pins = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" --hash", 1)[0].split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if exact:
            pins.append((req.name, exact[0], req))
    return pins


def _installed() -> dict[str, str]:
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)  # first on sys.path wins
    return found


def _satisfies(req, installed: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        # PEP 440: ==2.13.0 accepts 2.13.0+cpu; ==2.13.0+cpu wants exactly that local version.
        return req.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        return any(s.version == installed for s in req.specifier)


def check_lock(lock: Any = _DEFAULT) -> dict:
    """Compare each pin of ``lock`` (default: the checkout's requirements.lock) with what is
    installed. Status: "matches", "differs", or "absent" when there is no lock."""
    from packaging.utils import canonicalize_name

    path = default_lock() if lock is _DEFAULT else (Path(lock) if lock is not None else None)
    if path is None:
        return {"status": "absent", "path": None,
                "note": f"no {LOCK_NAME} beside the package (installed from a wheel?)"}
    pins = read_lock(Path(path).read_text())
    installed = _installed()
    mismatches, missing = [], []
    for name, pinned, req in pins:
        have = installed.get(canonicalize_name(name))
        if have is None:
            missing.append({"name": name, "locked": pinned})
        elif not _satisfies(req, have):
            mismatches.append({"name": name, "locked": pinned, "installed": have})
    return {"status": "differs" if mismatches or missing else "matches", "path": str(path),
            "packages": len(pins), "mismatches": mismatches, "missing": missing}


# ---------------------------------------------------------------------------------------------
# the report


def collect(store: Path | None = None, lock: Any = _DEFAULT, cpuinfo: Path = CPUINFO) -> dict:
    """Everything doctor prints, as a JSON-ready dict. Failed probes hold ``{"error": ...}``."""
    report: dict[str, Any] = {"adapter_manager": _probe(lambda: {"version": project_version()})}
    report["versions"] = _probe(versions)
    report["system"] = _probe(system)
    report["cpu"] = _probe(lambda: cpu_info(cpuinfo))
    report["cuda"] = _probe(cuda_info)
    report["compute"] = _probe(compute_plan)
    report["4bit"] = _probe(four_bit)
    report["bitsandbytes"] = _probe(bitsandbytes_info)
    report["paths"] = _probe(lambda: paths(store))
    report["lock"] = _probe(lambda: check_lock(lock))
    return report


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _lines(report: dict) -> list[tuple[str, str, str]]:
    """(key, value, style) rows; a key of "" continues the previous one, a section header has
    no value. Styles: "" plain, "error", "warn", "head"."""
    rows: list[tuple[str, str, str]] = []

    def failed(key: str, section: dict) -> bool:
        if "error" in section:
            rows.append((key, f"error: {section['error']}", "error"))
            return True
        return False

    if not failed("adapter-manager", report["adapter_manager"]):
        rows.append(("adapter-manager", report["adapter_manager"]["version"], ""))
    sysinfo = report["system"]
    if not failed("platform", sysinfo):
        rows.append(("platform", sysinfo["platform"], ""))
    vers = report["versions"]
    if not failed("versions", vers):
        rows.append(("python", f"{vers['python']} ({report['system'].get('python_executable', '?')})", ""))
        for name in PACKAGES:
            rows.append((name, vers[name] or "not installed", "" if vers[name] else "warn"))

    cpu = report["cpu"]
    if not failed("cpu", cpu):
        cores = f"{cpu['cores']} cores" + (f", {cpu['usable_cores']} usable"
                                           if cpu.get("usable_cores") not in (None, cpu["cores"]) else "")
        rows.append(("cpu", f"{cpu['model'] or 'unknown model'} ({cores})", ""))
        flags = cpu["flags"]
        if all(v is None for v in flags.values()):
            rows.append(("cpu flags", f"unknown ({cpu['source'] or 'no flags listed'})", "warn"))
        else:
            rows.append(("cpu flags", "  ".join(f"{k} {_yes(v)}" for k, v in flags.items()), ""))

    cuda = report["cuda"]
    if not failed("cuda", cuda):
        if not cuda["devices"]:
            built = f"torch built with CUDA {cuda['torch_cuda']}" if cuda["torch_cuda"] else "CPU-only torch"
            rows.append(("cuda", f"none ({built})", ""))
        for dev in cuda["devices"]:
            rows.append(("cuda" if dev["index"] == 0 else "",
                         f"{dev['index']}: {dev['name']}, compute capability {dev['capability']}, "
                         f"{dev['memory_gib']} GiB (CUDA {cuda['torch_cuda']})", ""))

    plan = report["compute"]
    if not failed("compute", plan):
        rows.append(("compute", f"{plan['device']}, {plan['compute_dtype']} ({plan['why']}); "
                                f"torch threads {plan['torch_threads']}", ""))
    quant = report["4bit"]
    if not failed("4-bit", quant):
        double = ", double quant" if quant["double_quant"] else ""
        rows.append(("4-bit", f"{quant['quant_type']}{double}, {quant['compute_dtype']} compute, "
                              f"{quant['layout']}", ""))
    bnb = report["bitsandbytes"]
    if not failed("bnb repacking", bnb):
        would = ("yes (AVX512-BF16), turned off by keep_4bit_layout" if bnb["would_repack_on_cpu"]
                 else "no (no AVX512-BF16)")
        rows.append(("bnb repacking", f"bitsandbytes would repack on this CPU: {would}", ""))
        if not bnb["repack_switch"]:
            rows.append(("", "Linear4bit has no support_avx512bf16_for_cpu switch in this "
                             "bitsandbytes: repacking cannot be turned off", "warn"))

    where = report["paths"]
    if not failed("paths", where):
        for key, label in (("store", "store"), ("runs", "runs"), ("base_cache", "base cache")):
            item = where[key]
            state = "" if item["exists"] else ", not created yet"
            rows.append((label, f"{item['path']} ({item['from']}{state})", ""))

    lock = report["lock"]
    if not failed("lock", lock):
        if lock["status"] == "absent":
            rows.append(("lock", lock["note"], ""))
        elif lock["status"] == "matches":
            rows.append(("lock", f"matches ({lock['packages']} packages) {lock['path']}", ""))
        else:
            count = len(lock["mismatches"]) + len(lock["missing"])
            rows.append(("lock", f"differs: {count} of {lock['packages']} packages {lock['path']}", "warn"))
            for m in lock["mismatches"]:
                rows.append(("", f"{m['name']}: locked {m['locked']}, installed {m['installed']}", "warn"))
            for m in lock["missing"]:
                rows.append(("", f"{m['name']}: locked {m['locked']}, not installed", "warn"))
    return rows


def render(report: dict) -> None:
    from rich.console import Console
    from rich.text import Text

    # soft_wrap: long paths stay on one line, so a paste into an issue keeps the alignment.
    console = Console(highlight=False, soft_wrap=True)
    rows = _lines(report)
    width = max(len(key) for key, _, _ in rows)
    styles = {"error": "red", "warn": "yellow", "": ""}
    for key, value, style in rows:
        console.print(Text(key.ljust(width + 2), style="bold") + Text(value, style=styles[style]))


def doctor(as_json: bool = JsonOpt, store: Path | None = StoreOpt) -> None:
    """Print versions, CPU/GPU, compute dtype, paths and lock status for a bug report."""
    report = collect(store)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        render(report)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
