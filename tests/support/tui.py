"""Shared helpers for the TUI tests (no tests here): a demo store with fixed contents and fixed
creation times, demo run logs with fixed event times, and a waiting helper for Pilot tests.

Screenshots must not change from run to run, so the snapshot store lives at a fixed path (its
path shows in the header) and is rebuilt under a file lock when its recipe changes; the app's
clock is pinned to FIXED_NOW."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import sqlite3
import time
from pathlib import Path

from filelock import FileLock

from adapters_store import Store
from adapters_store.testing import make_adapter_dir

REPO = Path(__file__).resolve().parents[2]
FIXED_NOW = 1748779200.0  # 2025-06-01T12:00:00Z
SNAPSHOT_ROOT = Path("/tmp/adapters-tui-snapshots/store")
RECIPE_VERSION = "2"
SNAPSHOT_CONFIGS = SNAPSHOT_ROOT.parent / "configs"
EMPTY_ROOT = SNAPSHOT_ROOT.parent / "empty-store"  # a new user's store, and a configs directory with none
EMPTY_CONFIGS = SNAPSHOT_ROOT.parent / "empty-configs"

LABELS = ["fresh", "rotten"]


def _metrics(f1: float, accuracy: float) -> dict:
    split = {"accuracy": accuracy, "f1_macro": f1, "precision_macro": f1 + 0.01, "recall_macro": f1 - 0.01,
             "loss": round(1 - accuracy, 4),
             "per_class": {"fresh": {"precision": f1 + 0.02, "recall": f1 - 0.03, "f1": f1, "support": 250},
                           "rotten": {"precision": f1 - 0.02, "recall": f1 + 0.03, "f1": f1, "support": 250}}}
    return {"dev": split, "test": split, "best_step": 120, "steps": 126}


def _lineage(name: str, base: str, method: str, task: str, method_config: dict, labels: list[str]) -> dict:
    return {
        "base": {"id": base, "revision": None, "fingerprint": "sha256:" + "ab" * 32, "model_type": "bert"},
        "quant": "4bit",
        "method": {"kind": method, "config": method_config},
        "task": {"kind": task, "labels": labels},
        "data": {"source": "builtin:rotten-tomatoes", "fingerprint": "sha256:" + "cd" * 32,
                 "columns": {"text": "text", "label": "label"}, "sizes": {"train": 2000, "dev": 500, "test": 500}},
        "training": {"name": name, "base": base, "task": task, "method": method},
        "libraries": {"torch": "2.13.0", "peft": "0.21.2"},
    }


def _config_yaml(name: str, base: str, method: str, task: str) -> bytes:
    return (f"name: {name}\nbase: {base}\ntask: {task}\nmethod: {method}\nquant: 4bit\n"
            "data:\n  source: builtin:rotten-tomatoes\n  text_column: text\n  label_column: label\n"
            "training:\n  epochs: 2\n  learning_rate: 0.001\n").encode()


# (name, base, method, task, metrics, minutes before FIXED_NOW, aliases)
VERSIONS = [
    ("rt-minilm-lora", "minilm-l6", "lora", "classification", _metrics(0.781, 0.79), 60 * 24 * 3, []),
    ("rt-minilm-lora", "minilm-l6", "lora", "classification", _metrics(0.812, 0.82), 60 * 5, ["prod"]),
    ("rt-minilm-prefix", "minilm-l6", "prefix", "classification", _metrics(0.744, 0.75), 90, ["staging"]),
    ("chat-smollm2-lora", "smollm2-135m", "lora", "causal-lm",
     {"dev": {"loss": 2.31, "perplexity": 10.07}, "test": {"loss": 2.35, "perplexity": 10.49}}, 25, []),
]


def build_demo_store(root: Path) -> list[str]:
    """Versions of three adapters plus a merge of two of them; returns their refs."""
    work = root.parent / "work"
    refs = []
    with Store(root) as s:
        for i, (name, base, method, task, metrics, _, aliases) in enumerate(VERSIONS):
            method_config = {"r": 8, "alpha": 16, "dropout": 0.1} if method == "lora" else {"num_virtual_tokens": 20}
            labels = LABELS if task == "classification" else []
            src = make_adapter_dir(work / f"v{i}", payload=bytes([i + 1]) * (4096 * (i + 1)), base=base,
                                   peft_type="LORA" if method == "lora" else "PREFIX_TUNING",
                                   extra_files={"training_config.yaml": _config_yaml(name, base, method, task),
                                                "label_map.json": json.dumps({"labels": labels}).encode()})
            v = s.put(src, name, lineage=_lineage(name, base, method, task, method_config, labels),
                      metrics=metrics, run_id=f"2025053{i}-120000-{name}-00000{i}")
            for alias in aliases:
                s.tag(v.ref, alias)
            refs.append(v.ref)
        lineage = _lineage("rt-merged", "minilm-l6", "lora", "classification", {"r": 16, "alpha": 32}, LABELS)
        lineage["merge"] = {"method": "ties", "density": 0.5,
                            "parents": [{"ref": "rt-minilm-lora@2", "digest": "sha256:" + "12" * 32, "weight": 0.7},
                                        {"ref": "rt-minilm-lora@1", "digest": "sha256:" + "34" * 32, "weight": 0.3}]}
        src = make_adapter_dir(work / "merged", payload=b"\x09" * 8192, base="minilm-l6")
        merged = s.put(src, "rt-merged", lineage=lineage, metrics=_metrics(0.8, 0.805), parent="rt-minilm-lora@2")
        refs.append(merged.ref)
    shutil.rmtree(work, ignore_errors=True)
    minutes = [v[5] for v in VERSIONS] + [10]
    db = sqlite3.connect(root / "store.db")
    with db:
        for ref, ago in zip(refs, minutes):
            name, number = ref.split("@")
            created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(FIXED_NOW - ago * 60))
            db.execute("UPDATE versions SET created = ? WHERE name = ? AND number = ?", (created, name, int(number)))
    db.close()
    return refs


def write_run(runs_dir: Path, run_id: str, name: str, start: float, steps: int, total: int,
              finished: bool, step_s: float = 2.0) -> Path:
    """A run log like the trainer's: start, steps with a falling loss, dev evals, maybe an end."""
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    events = [{"event": "start", "time": start, "run_id": run_id, "name": name, "total_steps": total,
               "steps_per_epoch": total // 2, "resumed_from": None, "device": "cpu"}]
    for step in range(1, steps + 1):
        t = start + step * step_s
        events.append({"event": "step", "time": t, "step": step, "epoch": round(step / (total // 2), 3),
                       "loss": round(0.7 * 0.93 ** step + 0.05 * ((step * 7) % 3) / 3, 5),
                       "lr": 1e-3 * (1 - step / total),
                       "tokens_per_s": 1500.0 + 10 * step})
        if step % (total // 4) == 0:
            f1 = round(0.5 + 0.35 * step / total, 4)
            events.append({"event": "eval", "time": t + 0.5, "split": "dev", "step": step, "epoch": step / (total // 2),
                           "metrics": {"accuracy": f1 + 0.01, "f1_macro": f1, "loss": round(1 - f1, 4)}, "best": True})
    if finished:
        end = start + steps * step_s + 2
        events.append({"event": "eval", "time": end - 1, "split": "test", "step": steps,
                       "metrics": {"accuracy": 0.84, "f1_macro": 0.83, "loss": 0.41}})
        events.append({"event": "end", "time": end, "status": "finished", "metrics": {}})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_dir


def build_demo_runs(root: Path) -> None:
    runs = root / "runs"
    write_run(runs, "20250601-113000-rt-minilm-lora-a1b2c3", "rt-minilm-lora", FIXED_NOW - 1800, 40, 40, True)
    write_run(runs, "20250601-115800-rt-minilm-prefix-d4e5f6", "rt-minilm-prefix", FIXED_NOW - 62, 28, 64, False)


DEMO_CONFIGS = {
    "sentiment-lora.yaml": """# Sentiment classification: LoRA on the 4-bit MiniLM encoder.
name: sentiment-lora
base: minilm-l6
task: classification
method: lora
quant: 4bit
lora: {r: 8, alpha: 16, dropout: 0.1}
data: {source: builtin:rotten-tomatoes, text_column: text, label_column: label, max_length: 64}
training: {epochs: 2, batch_size: 32, learning_rate: 1.0e-3}
""",
    "chat-prefix.yaml": """# Instruction tuning: prefix tuning on SmolLM2.
name: chat-prefix
base: smollm2-135m
task: causal-lm
method: prefix
prefix: {num_virtual_tokens: 16}
data: {source: builtin:chatterbot, prompt_column: prompt, response_column: response}
training: {epochs: 1, learning_rate: 3.0e-3, max_steps: 200}
""",
    "serve.yaml": "base: smollm2-135m\nport: 8000\n",  # not a training config: left out of the list
}


def build_demo_configs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in DEMO_CONFIGS.items():
        (directory / name).write_text(text)


def snapshot_root() -> Path:
    """The demo store at its fixed path, built once per recipe (safe across processes)."""
    SNAPSHOT_ROOT.parent.mkdir(parents=True, exist_ok=True)
    stamp = SNAPSHOT_ROOT.parent / "recipe"
    with FileLock(str(SNAPSHOT_ROOT.parent / ".lock")):
        if not (stamp.is_file() and stamp.read_text() == RECIPE_VERSION and SNAPSHOT_ROOT.is_dir()):
            shutil.rmtree(SNAPSHOT_ROOT, ignore_errors=True)
            shutil.rmtree(SNAPSHOT_CONFIGS, ignore_errors=True)
            build_demo_store(SNAPSHOT_ROOT)
            build_demo_runs(SNAPSHOT_ROOT)
            build_demo_configs(SNAPSHOT_CONFIGS)
            stamp.write_text(RECIPE_VERSION)
    return SNAPSHOT_ROOT


def empty_snapshot_root() -> Path:
    """An empty store at a fixed path (it shows in the header), and an empty configs directory."""
    SNAPSHOT_ROOT.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(SNAPSHOT_ROOT.parent / ".lock")):
        for directory in (EMPTY_ROOT, EMPTY_CONFIGS):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
    return EMPTY_ROOT


def demo_app(root: Path | None = None, **kwargs):
    """The app over a store (default: the snapshot store and its configs), with the clock pinned,
    no cursor blink and no background polling."""
    from adapters_tui.app import AdaptersApp

    if root is None:
        root = snapshot_root()
        kwargs.setdefault("configs_dir", SNAPSHOT_CONFIGS)
    kwargs.setdefault("configs_dir", REPO / "configs")
    kwargs.setdefault("clock", lambda: FIXED_NOW)
    kwargs.setdefault("cursor_blink", False)
    kwargs.setdefault("poll_interval", 0)
    return AdaptersApp(store_root=root, **kwargs)


async def wait_until(pilot, condition, timeout: float = 60.0, what: str = "a condition") -> None:
    """Let the app run until ``condition()`` holds (workers and subprocesses take real time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            screen = pilot.app.screen
            shown = f"{type(screen).__name__}: {getattr(screen, 'message', '')} {getattr(screen, 'hint', '') or ''}"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (on screen: {shown.strip()}; "
                                 f"focused: {pilot.app.focused!r})")
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def pilot_test(scenario):
    """Run an async Pilot scenario as a plain test (fixtures are passed through by name)."""

    @functools.wraps(scenario)
    def test(*args, **kwargs):
        asyncio.run(scenario(*args, **kwargs))

    return test


def shown_text(static, width: int = 120) -> str:
    """The plain text a Static shows (its rich renderable printed at ``width``)."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(static.content)
    return console.export_text()

