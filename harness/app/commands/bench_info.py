"""`mmunlearn bench-info`: profile and question counts per set, task and mode."""

from __future__ import annotations

import json

import pandas as pd

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH

NAME = "bench-info"
HELP = "Show how many profiles and questions each set, task and mode of a benchmark has."


def add_arguments(p) -> None:
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="benchmark folder or hub id (default: mini-bench)")
    p.add_argument("--benchmark", default=None, help="the benchmark plugin (default: recognised from the layout)")
    p.add_argument("--protocol", default=None, help="the benchmark's protocol (questions can depend on it)")
    p.add_argument(
        "--forget",
        type=int,
        default=None,
        help="forget split, the benchmark's own name (MLLMU-Bench 5|10|15, CLEAR 1|5|10)",
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


def run(args) -> int:
    bench = load_benchmark(args.bench, forget=args.forget, benchmark=args.benchmark, protocol=args.protocol)
    counts = bench.counts()
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    rows = [
        {"set": s, "task": t, "mode": m, "questions": n}
        for s, tasks in counts["questions"].items()
        for t, modes in tasks.items()
        for m, n in modes.items()
        if m in bench.cells(s, t)
    ]
    table = pd.DataFrame(rows).pivot_table(
        index=["set", "task"], columns="mode", values="questions", sort=False, aggfunc="sum"
    )
    table.columns.name = None
    table = table.map(lambda n: "-" if pd.isna(n) else int(n))  # "-": a cell the benchmark does not have
    print(
        f"benchmark: {bench.name} ({bench.source})  protocol: {bench.protocol}  forget: {bench.forget}%  "
        f"fingerprint: {bench.fingerprint[:12]}"
    )
    print("profiles: " + ", ".join(f"{s} {n}" for s, n in counts["profiles"].items()))
    print(table.to_string())
    return 0
