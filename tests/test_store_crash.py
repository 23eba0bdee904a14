"""Crash safety and concurrency with real processes: writers killed with SIGKILL at random moments,
and eight processes putting at once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from adapters_store import Store

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

WRITER = r"""
import sys
from pathlib import Path
from adapters_store import Store
from adapters_store.testing import make_adapter_dir
root, work, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
srcs = [make_adapter_dir(work / f"src{i}", payload=f"{seed}-{i}".encode() * 4000)
        for i in range(8)]
s = Store(root)
print("ready", flush=True)
i = 0
while True:
    s.put(srcs[i % len(srcs)], "crash", metrics={"seed": seed, "i": i})
    if i % 3 == 2:
        s.tag(f"crash@{s.resolve('crash').number}", "prod")
    i += 1
"""


def _uncommitted_dirs(root: Path) -> set[str]:
    """versions/crash/<n> dirs that have no committed row (read without opening a Store)."""
    db = sqlite3.connect(f"file:{root / 'store.db'}?mode=ro", uri=True)
    try:
        rows = {str(n) for (n,) in db.execute("SELECT number FROM versions WHERE name='crash'")}
    finally:
        db.close()
    d = root / "versions" / "crash"
    return {p.name for p in d.iterdir()} - rows if d.exists() else set()


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_moments_leaves_only_tmp_debris(tmp_path: Path):
    root = tmp_path / "store"
    Store(root).close()
    rng = random.Random(1234)
    debris_seen = uncommitted_seen = 0
    for run in range(100):
        proc = _start([WRITER, str(root), str(tmp_path / f"w{run % 4}"), str(run)])
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        debris_seen += any(root.joinpath("tmp").iterdir())
        uncommitted_seen += bool(_uncommitted_dirs(root))

    # writers died mid-put: their staging dirs are the only leftovers ...
    print(f"tmp debris after {debris_seen} of 100 kills, "
          f"an uncommitted version dir after {uncommitted_seen}")
    assert debris_seen >= 50
    # ... and reopening the store clears them
    s = Store(root)
    assert list(s.tmp.iterdir()) == []
    versions = s.list()
    print(f"{len(versions)} versions committed")
    assert len(versions) > 50  # the kills landed among real puts
    numbers = [v.number for v in versions]
    assert len(set(numbers)) == len(numbers)
    assert s.verify() == []
    for v in versions:
        s.check(v)  # re-hash every committed file
        assert sorted(p.name for p in v.path.iterdir()) == sorted([*v.files, "manifest.json"])
    # every version dir has its committed row and vice versa
    on_disk = {p.name for p in (s.versions_dir / "crash").iterdir()}
    assert on_disk == {str(n) for n in numbers}
    # blobs of puts that never committed are garbage for gc, nothing else is
    plan = s.gc(dry_run=False)
    assert {plan.kinds[str(p)] for p in plan.files} <= {"blob"}
    assert s.verify() == []
    v = s.put(tmp_path / "w0" / "src0", "crash")
    assert v.number > max(numbers)


CONCURRENT = r"""
import sys
from pathlib import Path
from adapters_store import Store
from adapters_store.testing import make_adapter_dir
root, work, proc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
s = Store(root)
for i in range(50):
    src = make_adapter_dir(work / f"p{proc}-{i}", payload=f"{proc}:{i}".encode() * 8)
    s.put(src, "shared", metrics={"proc": proc, "i": i})
print("done", flush=True)
"""


def test_eight_processes_fifty_puts_each(tmp_path: Path):
    root = tmp_path / "store"
    Store(root).close()
    procs = [_start([CONCURRENT, str(root), str(tmp_path / "work"), str(p)]) for p in range(8)]
    # meanwhile a reader never sees half a version: every listed version's files are complete
    reader = Store(root)
    checked: set[str] = set()
    while any(p.poll() is None for p in procs):
        for v in reader.list(name="shared"):
            if v.ref not in checked:
                reader.check(v)
                checked.add(v.ref)
        time.sleep(0.01)
    for p in procs:
        out, err = p.communicate(timeout=110)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    assert len(checked) > 20  # the reader did overlap with the writers
    s = Store(root)
    versions = s.list(name="shared")
    assert sorted(v.number for v in versions) == list(range(1, 401))
    assert sorted((v.metrics["proc"], v.metrics["i"]) for v in versions) == [
        (p, i) for p in range(8) for i in range(50)]
    assert s.resolve("shared").number == 400
    assert len({v.digest for v in versions}) == 400
    assert list(s.tmp.iterdir()) == []
    assert s.verify() == []


FIRST_OPEN = r"""
import sys
from adapters_store import Store
from adapters_store.testing import make_adapter_dir
root, work, proc = sys.argv[1], sys.argv[2], sys.argv[3]
Store(root).put(make_adapter_dir(f"{work}/{proc}", payload=proc.encode() * 9), "fresh")
"""


def test_processes_racing_to_create_a_new_store(tmp_path: Path):
    root = tmp_path / "new-store"  # does not exist yet: all race through layout + migrations
    procs = [_start([FIRST_OPEN, str(root), str(tmp_path / "w"), str(p)]) for p in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    s = Store(root)
    assert sorted(v.number for v in s.list()) == [1, 2, 3, 4, 5, 6]
    assert s.verify() == []
