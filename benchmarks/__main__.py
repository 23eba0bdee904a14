"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--quick]``.

NAME is one of memory, throughput, quality, store, combine, serving, tui, cpu, lmeval, sweep, cv, distill.

With no names, every benchmark runs. Each prints a table and writes benchmarks/results/<name>.json;
a summary of every goal is printed at the end (exit status 0 either way: goals are reported, not
asserted).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from benchmarks import common as C

NAMES = ("memory", "throughput", "quality", "store", "combine", "serving", "tui", "cpu", "lmeval", "sweep", "cv",
         "distill")


def _available() -> list[str]:
    out = []
    for name in NAMES:
        if importlib.util.find_spec(f"benchmarks.bench_{name}") is not None:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    available = _available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(available)})")
    parser.add_argument("--quick", action="store_true", help="a reduced run (fewer steps, smaller data, fewer repeats)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(available)}")
    names = args.names or available
    C.apply_env()
    C.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    info = C.machine()
    print(f"machine: {info['cpu']} ({', '.join(info['cpu_features'])}), {info['cores']} cores, "
          f"{info['memory_gib']} GiB; torch threads per run: "
          f"{C.THREADS}; load {info['load_avg_1m']}", flush=True)
    goals: dict[str, dict] = {}
    failed = []
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"\n== {name}{' (quick)' if args.quick else ''} ==", flush=True)
        start = time.perf_counter()
        try:
            result = module.run(quick=args.quick)
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
            continue
        for goal, value in (result or {}).get("goals", {}).items():
            goals[f"{name}: {goal}"] = value if isinstance(value, dict) else {"value": None, "met": bool(value)}
        print(f"({name} took {time.perf_counter() - start:.0f} s)", flush=True)
    if goals:
        rows = [[k, "-" if v.get("value") is None else v["value"], C.goal(v["met"])] for k, v in goals.items()]
        C.print_table("Goals", ["goal", "value", "status"], rows)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
