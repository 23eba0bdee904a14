"""Reliability of the store under faults and load, with real processes on a real SQLite store:
writers killed with SIGKILL mid-put, and put / rm / gc / verify / export / check racing each
other from several processes (and through the ``adapters`` CLI). Bounded in count; each test has
a pytest-timeout. Run with ``make test-reliability`` (excluded from ``make test``).

Each test prints its figures (kills survived, operations run, failures) for the record."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters_store import Store
from adapters_store import files as fs
from adapters_store.testing import make_adapter_dir

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"}


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)


def _sources(root: Path, count: int, size: int) -> list[Path]:
    """Adapter dirs; pairs share their weights file, so versions share blobs."""
    out = []
    for i in range(count):
        out.append(make_adapter_dir(root / f"src{i}", payload=f"w{i // 2}".encode() * size,
                                    r=8 + i))
    return out


# ---------------------------------------------------------------------------- SIGKILL mid-put

KILLED_WRITER = r"""
import sys
from pathlib import Path
from adapters_store import Store
root, seed = Path(sys.argv[1]), int(sys.argv[2])
srcs = [Path(p) for p in sys.argv[3:]]
s = Store(root)
print("ready", flush=True)
i = 0
while True:
    src = srcs[(seed + i) % len(srcs)]
    v = s.put(src, f"k{seed % 3}", metrics={"seed": seed, "i": i})
    print("stored", v.ref, v.digest, flush=True)  # only after put returned: the commit is durable
    if i % 4 == 3:
        s.tag(v.ref, "prod")
    i += 1
"""

KILL_ROUNDS = 30
WRITERS_PER_ROUND = 2


@pytest.mark.timeout(240)
def test_sigkill_during_puts_loses_nothing_reported_and_leaves_the_store_whole(tmp_path: Path):
    root = tmp_path / "store"
    Store(root).close()
    srcs = [str(p) for p in _sources(tmp_path / "src", 6, 20_000)]
    rng = random.Random(20261202)
    reported: dict[str, str] = {}  # ref -> digest, as the killed writers printed them
    kills = verify_runs = 0
    failures: list[str] = []
    for rnd in range(KILL_ROUNDS):
        procs = [_python(KILLED_WRITER, str(root), str(rnd * WRITERS_PER_ROUND + w), *srcs)
                 for w in range(WRITERS_PER_ROUND)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(rng.uniform(0.02, 0.4))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == -signal.SIGKILL, err
            kills += 1
            if "Traceback" in err:
                failures.append(err)
            for line in out.splitlines():
                if line.startswith("stored "):
                    _, ref, digest = line.split()
                    reported[ref] = digest
        if rnd % 3 == 0:  # the next reader after a crash: sweeps the debris, finds nothing wrong
            proc = _cli("verify", "--store", str(root))
            verify_runs += 1
            if proc.returncode != 0:
                failures.append(proc.stdout + proc.stderr)

    with Store(root) as s:
        stored = {v.ref: v for v in s.list()}
        lost = [ref for ref, digest in reported.items()
                if ref not in stored or stored[ref].digest != digest]
        problems = s.verify()
        damaged = []
        for v in stored.values():
            try:
                s.check(v.ref)
            except Exception as exc:  # noqa: BLE001 - counted and shown below
                damaged.append(f"{v.ref}: {exc}")
        assert list(s.tmp.iterdir()) == []  # opening swept the dead writers' staging dirs
    print(f"\nSIGKILL: {kills} kills survived in {KILL_ROUNDS} rounds, {len(reported)} puts "
          f"reported stored, {len(stored)} versions in the store, {len(lost)} lost, "
          f"{len(damaged)} damaged, {len(problems)} verify problems, {verify_runs} CLI verify "
          f"runs after kills, {len(failures)} failures")
    assert kills == KILL_ROUNDS * WRITERS_PER_ROUND
    assert len(reported) >= KILL_ROUNDS  # the kills did land between puts, not before them
    assert lost == []
    assert damaged == []
    assert problems == []
    assert failures == []


# ---------------------------------------------------------------------------- concurrent load

WORKER = r"""
import json, os, random, sys, traceback
from pathlib import Path
from adapters_store import RefNotFound, Store
from adapters_store import files as fs

role, root, seed, ops, out_dir = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), Path(sys.argv[5])
srcs = [Path(p) for p in sys.argv[6:]]
rng = random.Random(seed)
s = Store(root)
done, refused, failures = 0, 0, []


def pick():
    versions = s.list()
    return rng.choice(versions).ref if versions else None


def export_once(i):
    ref = pick()
    if ref is None:
        return False
    dest = out_dir / f"{role}-{seed}-{i}"
    try:
        s.export(ref, dest)
    except RefNotFound:
        siblings = [p.name for p in dest.parent.iterdir() if dest.name in p.name]
        if dest.exists() or siblings:
            failures.append(f"refused export of {ref} left {siblings}")
        return True
    manifest = json.loads((dest / "manifest.json").read_text())
    for rel, info in manifest["files"].items():
        if fs.sha256_file(dest / rel)[0] != info["sha256"]:
            failures.append(f"export of {ref}: {rel} does not match")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    if files != sorted([*manifest["files"], "manifest.json"]):
        failures.append(f"export of {ref}: files {files}")
    return False


for i in range(ops):
    try:
        if role == "put":
            s.put(rng.choice(srcs), rng.choice(["a", "b"]), metrics={"i": i})
        elif role == "rm":
            ref = pick()
            if ref is not None:
                try:
                    s.remove(ref, force=True)
                except RefNotFound:
                    refused += 1
        elif role == "gc":
            s.gc(dry_run=False)
        elif role == "verify":
            problems = s.verify()
            failures.extend(p.message for p in problems)  # nothing damages files here
        elif role == "export":
            refused += export_once(i)
        elif role == "check":
            ref = pick()
            if ref is not None:
                try:
                    s.check(ref)
                except RefNotFound:
                    refused += 1
        done += 1
    except Exception:
        failures.append(traceback.format_exc())
print(json.dumps({"role": role, "done": done, "refused": refused, "failures": failures}))
"""

ROLES = {"put": (2, 60), "rm": (1, 50), "gc": (1, 25), "verify": (1, 15), "export": (2, 40),
         "check": (1, 60)}
CLI_ROUNDS = 12


@pytest.mark.timeout(240)
def test_concurrent_put_rm_gc_verify_export_from_many_processes(tmp_path: Path):
    root = tmp_path / "store"
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    srcs = [str(p) for p in _sources(tmp_path / "src", 6, 8_000)]
    with Store(root) as s:
        for src in srcs[:3]:
            s.put(src, "a")
    procs = []
    for role, (count, ops) in ROLES.items():
        for _ in range(count):
            procs.append(_python(WORKER, role, str(root), str(len(procs) + 1), str(ops),
                                 str(out_dir), *srcs))

    # meanwhile, the CLI: verify and export as a user would run them
    cli_ops = cli_refused = 0
    failures: list[str] = []
    rng = random.Random(7)
    for i in range(CLI_ROUNDS):
        proc = _cli("verify", "--store", str(root))
        cli_ops += 1
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            failures.append(f"verify: {proc.returncode} {proc.stdout} {proc.stderr}")
        dest = out_dir / f"cli-{i}"
        ref = rng.choice(["a", "b", "a@1", "b@prod"])
        proc = _cli("export", ref, str(dest), "--format", rng.choice(["peft", "vllm"]),
                    "--store", str(root))
        cli_ops += 1
        if "Traceback" in proc.stderr:
            failures.append(proc.stderr)
        elif proc.returncode == 0:
            manifest = json.loads((dest / fs.MANIFEST).read_text())
            for rel, info in manifest["files"].items():
                if fs.sha256_file(dest / rel)[0] != info["sha256"]:
                    failures.append(f"cli export {ref}: {rel} does not match")
        elif proc.returncode == 2 and proc.stderr.startswith("error: "):
            cli_refused += 1
            if dest.exists() or any(dest.name in p.name for p in out_dir.iterdir()):
                failures.append(f"cli export {ref} refused but left files: {proc.stderr}")
        else:
            failures.append(f"cli export {ref}: {proc.returncode} {proc.stderr}")

    results = []
    for p in procs:
        out, err = p.communicate(timeout=200)
        if p.returncode != 0 or "Traceback" in err:
            failures.append(f"worker exit {p.returncode}: {err[-2000:]}")
            continue
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        failures.extend(f"{r['role']}: {f}" for f in r["failures"])

    with Store(root) as s:
        final = s.verify()
        s.gc(dry_run=False)
        after_gc = s.verify()
        for v in s.list():
            s.check(v.ref)
    leftovers = [p.name for p in out_dir.iterdir() if p.name.startswith(".")]
    ops = sum(r["done"] for r in results) + cli_ops
    refused = sum(r["refused"] for r in results) + cli_refused
    by_role: dict[str, int] = {}
    for r in results:
        by_role[r["role"]] = by_role.get(r["role"], 0) + r["done"]
    print(f"\nconcurrent: {len(procs)} processes + the CLI, {ops} operations "
          f"({', '.join(f'{k} {v}' for k, v in by_role.items())}, cli {cli_ops}), "
          f"{refused} refused cleanly (removed meanwhile), {len(failures)} failures, "
          f"{len(final)} verify problems at the end")
    assert failures == [], "\n".join(failures[:5])
    assert final == [] and after_gc == []
    assert leftovers == []
    assert ops == sum(c * n for c, n in ROLES.values()) + cli_ops
