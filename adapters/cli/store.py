"""Store commands of the ``adapters`` CLI: list, show, tag, untag, rm, diff, import, export, verify,
gc, path. No torch here except inside ``import --allow-pickle``, which converts pickled weights
(adapters.pickled), and ``export --merged``, which merges an adapter into its base."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import typer

from adapters.cli.options import JsonOpt, StoreOpt
from adapters.sizes import human_size


def _store(path: Path | None, *, create: bool = False):
    """Only commands that store something create a store; the others refuse a path without one,
    so a mistyped --store is reported instead of becoming a new, empty store."""
    from adapters_store import Store

    return Store(path, create=create)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


# `adapters list` columns, most important first: a narrow terminal drops them from the end.
LIST_COLUMNS = ("ref", "metric", "aliases", "created", "method", "task", "base", "size", "digest")


def _list_rows(s, versions) -> list[dict[str, str]]:
    from adapters.evaluation.metrics import headline_text

    latest = s.latest_numbers()
    rows = []
    for v in versions:
        aliases = list(v.aliases) + (["latest"] if latest.get(v.name) == v.number else [])
        rows.append({"ref": v.ref, "metric": headline_text(v.metrics), "aliases": ",".join(aliases),
                     "created": v.created[:16].replace("T", " "), "method": v.method or "",
                     "task": v.task or "", "base": v.base or "", "size": human_size(v.size_bytes),
                     "digest": v.digest[7:19]})
    return rows


def _print_columns(rows: list[dict[str, str]], columns: tuple[str, ...], width: int | None) -> None:
    """Plain aligned columns (no box drawing, nothing cut short): on a terminal the columns that do
    not fit its width are left out, last first; in a pipe every column is printed."""
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    shown = list(columns)
    while width is not None and len(shown) > 2 and sum(widths[c] + 2 for c in shown) - 2 > width:
        shown.pop()
    for row in [{c: c.upper() for c in shown}, *rows]:
        typer.echo("  ".join(row[c].ljust(widths[c]) for c in shown).rstrip())


def _check_kind(value: str | None, option: str, known: tuple[str, ...], stored: set[str]) -> None:
    from adapters.errors import UsageError

    if value is not None and value not in known and value not in stored:
        raise UsageError(f"unknown {option[2:]} '{value}'",
                         f"{option} takes one of: {', '.join(sorted(set(known) | stored))}")


def list_cmd(
    name: str | None = typer.Option(None, "--name", help="Only this adapter name."),
    base: str | None = typer.Option(None, "--base", help="Only adapters of this base model id."),
    method: str | None = typer.Option(None, "--method", help="Only this method (lora, prefix)."),
    task: str | None = typer.Option(None, "--task", help="Only this task kind."),
    alias: str | None = typer.Option(None, "--alias", help="Only versions carrying this alias."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """List stored adapter versions."""
    import sys
    from typing import get_args

    from adapters_store import StoreNotFound
    from adapters_store.core import default_root

    try:
        s = _store(store)
    except StoreNotFound:
        if store is not None:  # a --store that names no store: a mistake to report
            raise
        # The default place before the first `train` or `import`: nothing stored yet, not an error.
        if as_json:
            _print_json([])
        else:
            typer.echo(f"no adapters stored yet ({default_root().resolve()} holds no store); "
                       "train one with `adapters train configs/rt-minilm-lora.yaml`")
        return
    with s:
        if method is not None or task is not None:
            from adapters.config import MethodKind, TaskKind

            everything = s.list()
            _check_kind(method, "--method", get_args(MethodKind), {v.method for v in everything if v.method})
            _check_kind(task, "--task", get_args(TaskKind), {v.task for v in everything if v.task})
        versions = s.list(name=name, base=base, method=method, task=task, alias=alias)
        if as_json:
            _print_json([v.to_dict() for v in versions])
            return
        if not versions:
            typer.echo(f"no versions in {s.root}" + (" match" if any((name, base, method, task, alias)) else ""))
            return
        terminal = sys.stdout.isatty()
        if terminal:
            typer.echo(f"{len(versions)} version(s) in {s.root}")
        _print_columns(_list_rows(s, versions), LIST_COLUMNS, shutil.get_terminal_size().columns if terminal else None)


def _value(value: Any) -> str:
    """A stored value for people: floats to 6 significant digits, lists and mappings as compact JSON."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return "" if value is None else str(value)


def show(ref: str = typer.Argument(..., help="name, name@3, name@alias or sha256:<prefix>"),
         as_json: bool = JsonOpt, store: Path | None = StoreOpt) -> None:
    """Show one version: ref, content id, lineage, metrics, files."""
    from adapters.evaluation.metrics import SPLIT_PREFERENCE

    with _store(store) as s:
        v = s.resolve(ref)
    if as_json:
        _print_json(v.to_dict())
        return
    lines = [("ref", v.ref), ("digest", v.digest), ("aliases", ", ".join(v.aliases)),
             ("created", v.created[:19].replace("T", " ")), ("base", v.base), ("method", v.method),
             ("task", v.task), ("size", human_size(v.size_bytes)), ("parent", v.parent), ("run", v.run_id),
             ("path", str(v.path))]
    metrics = v.metrics or {}
    for split in (*SPLIT_PREFERENCE, *(k for k, x in metrics.items() if isinstance(x, dict)
                                       and k not in SPLIT_PREFERENCE)):
        part = metrics.get(split)
        if isinstance(part, dict):
            numbers = [f"{k} {x:.4g}" for k, x in part.items()
                       if isinstance(x, (int, float)) and not isinstance(x, bool)]
            lines.append((f"{split} metrics", "  ".join(numbers)))
    flat = [f"{k} {_value(x)}" for k, x in metrics.items() if not isinstance(x, dict)]
    if flat:
        lines.append(("metrics", "  ".join(flat)))
    config = (v.lineage or {}).get("training") or {}  # the whole training config
    for key in ("data", "training"):
        if isinstance(config.get(key), dict):
            lines.append((key, "  ".join(f"{k}={_value(x)}" for k, x in config[key].items() if x is not None)))
    lines.append(("files", "  ".join(f"{rel} ({human_size(f['size'])})" for rel, f in sorted(v.files.items()))))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        if value:
            typer.echo(f"{key.ljust(width)}  {value}")
    typer.echo(f"{''.ljust(width)}  (`adapters show {v.ref} --json` for everything)")


def tag(ref: str = typer.Argument(..., help="The version to tag."),
        alias: str = typer.Argument(..., help="Alias such as prod; moves if it exists."),
        store: Path | None = StoreOpt) -> None:
    """Point an alias (e.g. prod) at a version."""
    from adapters_store import RefNotFound, check_alias

    check_alias(alias)
    with _store(store) as s:
        target = s.resolve(ref)
        try:
            before = s.resolve(f"{target.name}@{alias}")
        except (RefNotFound, ValueError):
            before = None
        v = s.tag(target.ref, alias)
    moved = f" (moved from {before.ref})" if before is not None and before.ref != v.ref else ""
    _console().print(f"{v.name}@{alias} -> {v.ref}{moved}")


def untag(ref: str = typer.Argument(..., help="The adapter name (or one version of it)."),
          alias: str = typer.Argument(..., help="The alias to remove."),
          store: Path | None = StoreOpt) -> None:
    """Remove an alias."""
    with _store(store) as s:
        v = s.untag(ref, alias)
    _console().print(f"removed alias {alias} from {v.ref}")


def rm(ref: str = typer.Argument(..., help="The version to remove."),
       force: bool = typer.Option(False, "--force", help="Also remove it if it carries aliases."),
       store: Path | None = StoreOpt) -> None:
    """Remove a version (its number is never reused; `adapters gc` frees the space)."""
    with _store(store) as s:
        v = s.remove(ref, force=force)
    _console().print(f"removed {v.ref} ({v.digest[:19]}); run `adapters gc` to free unused blobs")


def diff(ref_a: str = typer.Argument(..., help="First version."),
         ref_b: str = typer.Argument(..., help="Second version."),
         as_json: bool = JsonOpt, store: Path | None = StoreOpt) -> None:
    """Compare config, lineage, metrics and files of two versions."""
    with _store(store) as s:
        d = s.diff(ref_a, ref_b)
    if as_json:
        _print_json(d)
        return
    a, b = d["a"], d["b"]
    typer.echo(f"{a} vs {b}: " + ("same content" if d["same_content"] else "different content"))
    for section, parts in d["sections"].items():
        short = (lambda x: x[:12]) if section == "files" else _value  # sha256 digests
        rows = ([(k, *((short(va), short(vb)) if section == "files" else _pair(va, vb)))
                 for k, (va, vb) in parts["changed"].items()]
                + [(k, short(v), f"(not in {b})") for k, v in parts["only_a"].items()]
                + [(k, f"(not in {a})", short(v)) for k, v in parts["only_b"].items()])
        shared = len(parts["same"])
        if not rows:
            typer.echo(f"{section}: identical ({shared} shared)")
            continue
        typer.echo(f"{section}: {len(rows)} differ, {shared} shared")
        width = max(len(k) for k, _, _ in rows)
        for key, va, vb in rows:
            typer.echo(f"  {key.ljust(width)}  {va}  ->  {vb}")


def _pair(a: Any, b: Any) -> tuple[str, str]:
    """Two differing values as text that still differs (full precision when rounding hides it)."""
    ta, tb = _value(a), _value(b)
    return (repr(a), repr(b)) if ta == tb else (ta, tb)


def import_cmd(
    src: Path = typer.Argument(..., help="A PEFT adapter directory."),
    name: str = typer.Option(..., "--name", help="Adapter name to store it under."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Convert adapter_model.bin to safetensors (loads it "
                                      "with torch, weights only)."),
    new_version: bool = typer.Option(False, "--new-version",
                                     help="Store it as a new version even if a version of this "
                                     "name already holds the same content."),
    as_json: bool = JsonOpt,
    store: Path | None = StoreOpt,
) -> None:
    """Import a PEFT adapter directory made elsewhere."""
    from adapters_store import AlreadyStored, PickleRefused

    existing = False
    with _store(store, create=True) as s:
        try:
            try:
                v = s.import_dir(src, name, new_version=new_version)
            except PickleRefused:
                if not allow_pickle:
                    raise
                from adapters.pickled import convert_pickled

                with tempfile.TemporaryDirectory(prefix="adapters-import-") as tmp:
                    converted = convert_pickled(Path(src), Path(tmp) / "adapter")
                    v = s.import_dir(converted, name, new_version=new_version)
        except AlreadyStored as exc:  # like a download into a cache: the copy already there
            v, existing = exc.version, True
    if as_json:
        _print_json({**v.to_dict(), "already_stored": existing})
        return
    if existing:
        _console().print(f"{src} is already stored as {v.ref} ({v.digest[:19]}); nothing "
                         f"imported (--new-version stores it again as a new version)")
        return
    _console().print(f"imported {src} as {v.ref} ({v.digest[:19]}, {human_size(v.size_bytes)})")


def export(ref: str = typer.Argument(..., help="The version to export."),
           dest: Path = typer.Argument(..., help="New (or empty) directory."),
           fmt: str = typer.Option("peft", "--format", help="peft: the PEFT directory; vllm: the "
                                   "same, plus the vLLM command line that serves it."),
           lora_name: str | None = typer.Option(None, "--lora-name",
                                                   help="Name vLLM serves it under (vllm format; "
                                                   "default: the adapter name)."),
           merged: bool = typer.Option(False, "--merged", help="Save the base with the LoRA adapter "
                                       "merged in, as a full model plain transformers loads (float32; "
                                       "a quantized base is dequantized first)."),
           store: Path | None = StoreOpt) -> None:
    """Copy a version out of the store as a plain PEFT directory (or, --merged, a full model)."""
    from adapters.vllm_export import check_servable, vllm_command
    from adapters_store import StoreError

    if fmt not in ("peft", "vllm"):
        raise StoreError(f"unknown export format {fmt!r}", hint="use --format peft or vllm")
    if merged:
        if fmt != "peft" or lora_name:
            raise StoreError("--merged writes a full model; --format vllm and --lora-name are for "
                             "adapter exports", hint="drop --format / --lora-name, or drop --merged")
        return _export_merged(ref, dest, store)
    with _store(store) as s:
        v = s.resolve(ref)
        config = _stored_config(s, v) if fmt == "vllm" else {}
        if fmt == "vllm":
            check_servable(v.ref, v.method, config)
        out = s.export(v.ref, dest).resolve()
    console = _console()
    console.print(f"exported {v.ref} to {out}")
    if fmt == "vllm":
        from rich.text import Text

        command = vllm_command(v.ref, v.base, config, out, lora_name or v.name)
        for note in command.notes:
            console.print(Text("note: ", style="yellow") + Text(note))
        typer.echo(command.lora_modules)
        typer.echo(command.command)


def _stored_config(s, v) -> dict:
    """adapter_config.json of a version, read from its checked blob."""
    from adapters.artifact import CONFIG_FILE
    from adapters_store import IntegrityError

    try:
        config = json.loads(s.open_file(v.ref, CONFIG_FILE))
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise IntegrityError(f"{v.ref}: {CONFIG_FILE} is not a JSON object",
                             hint=f"re-import the adapter from its source, or "
                             f"`adapters rm {v.ref}`")
    return config


def _export_merged(ref: str, dest: Path, store: Path | None) -> None:
    from rich.console import Console

    from adapters.combine.export_merged import export_merged

    _store(store).close()  # a missing store is reported, not created
    console = Console(highlight=False, soft_wrap=True)  # paths and notes stay whole lines
    with console.status(f"merging {ref} into its base"):
        result = export_merged(ref, dest, store_root=store)
    console.print(f"exported {ref} merged into {result.base} ({result.task}, {result.dtype}) to {result.path}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


def verify(ref: str | None = typer.Argument(None, help="One version; default: the store."),
           as_json: bool = JsonOpt, store: Path | None = StoreOpt) -> None:
    """Re-hash stored files; exit 1 if any is missing or corrupted."""
    from rich.table import Table

    with _store(store) as s:
        root, problems = s.root, s.verify(ref)
    if as_json:
        _print_json([p.to_dict() for p in problems])
    elif not problems:
        _console().print(f"ok: {ref or root} verified, no problems")
    else:
        table = Table(title=f"{len(problems)} problem(s)", title_justify="left")
        for col in ("kind", "path", "message"):
            table.add_column(col)
        for p in problems:
            table.add_row(p.kind, str(p.path), p.message)
        _console().print(table)
    if problems:
        raise SystemExit(1)


def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would go."),
       as_json: bool = JsonOpt, store: Path | None = StoreOpt) -> None:
    """Delete blobs no version uses and debris of crashed writers."""
    with _store(store) as s:
        plan = s.gc(dry_run=True)
        if as_json:
            if not dry_run and plan.files:
                plan = s.gc(dry_run=False)
            data = plan.to_dict()
            data["dry_run"] = dry_run
            _print_json(data)
            return
        console = _console()
        console.print(f"gc plan: {human_size(plan.bytes)} in {len(plan.files)} path(s)")
        for p in plan.files:
            console.print(f"  {plan.kinds.get(str(p), ''):5} {p}")
        if dry_run or not plan.files:
            console.print("dry run: nothing removed" if dry_run else "nothing to remove")
            return
        done = s.gc(dry_run=False)
        console.print(f"removed {len(done.files)} path(s), freed {human_size(done.bytes)}")


def path(ref: str = typer.Argument(..., help="The version."),
         store: Path | None = StoreOpt) -> None:
    """Print the version's PEFT directory."""
    with _store(store) as s:
        typer.echo(str(s.path(ref)))


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("show")(show)
    app.command("tag")(tag)
    app.command("untag")(untag)
    app.command("rm")(rm)
    app.command("diff")(diff)
    app.command("import")(import_cmd)
    app.command("export")(export)
    app.command("verify")(verify)
    app.command("gc")(gc)
    app.command("path")(path)
