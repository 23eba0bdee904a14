"""Store benchmark: list and resolve on a store with 10,000 versions, and put of a ~300 KB adapter
directory against ``shutil.copytree`` of the same directory, measured in the same run.

    python -m benchmarks store [--quick]   # prints a table, writes benchmarks/results/store.json

How the big store is built: 10,000 real ``put`` calls of tiny PEFT-shaped dirs (100 names x 100
versions, version 1 of each tagged prod), with ``Store(durable=False)`` (no fsync) so the build
takes seconds, not minutes; the index and files are exactly what durable puts write. The build is
time-boxed (``BUILD_BUDGET_S``); the JSON records how many versions were built.
All timings are medians of repeated runs (a shared 2-core VM shows 10-30x outliers); ratios compare
numbers taken in the same run. ``copytree`` copies without fsync; a durable put fsyncs its blobs,
directories and index, so ``copytree + fsync`` is reported as well: it is the like-for-like cost.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from adapters_store import Store
from adapters_store.testing import make_adapter_dir
from benchmarks import common as C

N_VERSIONS = int(os.environ.get("BENCH_STORE_VERSIONS", "10000"))
N_NAMES = 100
BUILD_BUDGET_S = float(os.environ.get("BENCH_STORE_BUDGET_S", "180"))
PUT_RUNS = 15
ADAPTER_BYTES = 300_000


def _median_ms(fn, runs: int) -> float:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _build(store: Store, work: Path, versions: int) -> tuple[int, float]:
    srcs = [make_adapter_dir(work / f"tiny{i}", payload=f"tiny-{i}".encode() * 8)
            for i in range(50)]
    start = time.perf_counter()
    built = 0
    for i in range(versions):
        name = f"adapter-{i % N_NAMES:03d}"
        store.put(srcs[i % len(srcs)], name, metrics={"acc": (i % 97) / 97},
                  lineage={"base": {"id": f"base-{i % 3}"}, "training": {"seed": i}})
        built += 1
        if time.perf_counter() - start > BUILD_BUDGET_S:
            break
    for n in range(min(N_NAMES, built)):
        store.tag(f"adapter-{n:03d}@1", "prod")
    return built, time.perf_counter() - start


def run(quick: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        results = _run(work, N_VERSIONS // 5 if quick else N_VERSIONS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(results)
    print(f"wrote {C.write_json('store', {'quick': quick, **results})}")
    return results


def _copytree_fsync(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(work: Path, versions: int) -> dict:
    results: dict = {}
    fast = Store(work / "big", durable=False)
    built, build_s = _build(fast, work / "src", versions)
    fast.close()
    results["versions"] = built
    results["build_s"] = round(build_s, 1)

    t = time.perf_counter()
    big = Store(work / "big")
    results["open_ms"] = round((time.perf_counter() - t) * 1000, 2)
    listed = big.list()
    assert len(listed) == built
    results["list_all_ms"] = _median_ms(lambda i: big.list(), 7)
    results["list_name_ms"] = _median_ms(lambda i: big.list(name=f"adapter-{i % N_NAMES:03d}"), 51)
    results["list_filter_base_ms"] = _median_ms(lambda i: big.list(base="base-1"), 7)
    names = [f"adapter-{i % N_NAMES:03d}" for i in range(200)]
    digests = [v.digest[:20] for v in listed[:: max(1, len(listed) // 200)]]
    resolve = {
        "name": lambda i: big.resolve(names[i]),
        "name@3": lambda i: big.resolve(f"{names[i]}@3"),
        "name@prod": lambda i: big.resolve(f"{names[i]}@prod"),
        "sha256:prefix": lambda i: big.resolve(f"{digests[i % len(digests)]}"),
    }
    results["resolve_ms"] = {k: _median_ms(fn, 200) for k, fn in resolve.items()}
    results["check_one_ms"] = _median_ms(lambda i: big.check(names[i]), 51)
    big.close()

    # put of a ~300 KB adapter vs copytree of the same dir; fresh random weights every run so
    # that put never deduplicates (a dedup run is reported separately)
    srcs = [make_adapter_dir(work / "big-src" / str(i), payload=os.urandom(ADAPTER_BYTES))
            for i in range(PUT_RUNS)]
    size = sum(f.stat().st_size for f in srcs[0].iterdir())
    durable = Store(work / "durable")
    nofsync = Store(work / "nofsync", durable=False)
    copies = work / "copies"
    rounds = {"copytree": [], "copytree_fsync": [], "put": [], "put_nofsync": [], "put_dedup": []}
    for i in range(PUT_RUNS):  # interleaved, so drifts in machine load hit all alike
        for key, fn in (("copytree", lambda i=i: shutil.copytree(srcs[i], copies / str(i))),
                        ("copytree_fsync", lambda i=i: _copytree_fsync(srcs[i], copies / f"{i}-fsync")),
                        ("put", lambda i=i: durable.put(srcs[i], "big")),
                        ("put_nofsync", lambda i=i: nofsync.put(srcs[i], "big")),
                        ("put_dedup", lambda i=i: durable.put(srcs[i], "again"))):
            t = time.perf_counter()
            fn()
            rounds[key].append(time.perf_counter() - t)
    put = {k: statistics.median(v) * 1000 for k, v in rounds.items()}
    results["adapter_bytes"] = size
    results["put_ms"] = put
    results["put_over_copytree"] = {k: put[k] / put["copytree"] for k in put if k != "copytree"}
    durable.close()
    nofsync.close()
    list_ms = results["list_all_ms"]
    resolve_ms = max(results["resolve_ms"].values())
    put_ratio = results["put_over_copytree"]["put"]
    results["goals"] = {
        f"list {built} versions < 300 ms": {"value": f"{list_ms:.0f} ms", "met": list_ms < 300},
        "resolve a ref < 5 ms": {"value": f"{resolve_ms:.2f} ms", "met": resolve_ms < 5},
        "put 300 KB <= 2x copytree": {"value": C.ratio(put_ratio), "met": put_ratio <= 2},
    }
    return results


def _print(r: dict) -> None:
    rows = [
        ["versions in store", f"{r['versions']}", f"built in {r['build_s']} s"],
        ["open store", f"{r['open_ms']:.1f} ms", ""],
        ["list() all versions", f"{r['list_all_ms']:.1f} ms", "goal < 300 ms"],
        ["list(name=...)", f"{r['list_name_ms']:.2f} ms", ""],
        ["list(base=...)", f"{r['list_filter_base_ms']:.1f} ms", ""],
        *[[f"resolve {k}", f"{v:.3f} ms", "goal < 5 ms"] for k, v in r["resolve_ms"].items()],
        ["check() one version", f"{r['check_one_ms']:.3f} ms", "re-hash"],
        [f"copytree {r['adapter_bytes'] // 1000} KB dir", f"{r['put_ms']['copytree']:.2f} ms", "baseline"],
        *[[k.replace("_", " "), f"{r['put_ms'][k]:.2f} ms", f"{r['put_over_copytree'][k]:.1f}x copytree"]
          for k in ("copytree_fsync", "put", "put_nofsync", "put_dedup")],
    ]
    C.print_table("Store", ["operation", "median", "note"], rows)


if __name__ == "__main__":
    run()
