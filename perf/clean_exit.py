"""Every CLI command exits with its own code, also under CPU load (not a speed figure: a stress run).

Launches `mmunlearn bench-info`, `list`, `leaderboard`, `check` and a small `run` round-robin,
each `--runs` times, while `--load` busy-loop processes keep the CPU saturated (the condition
under which an exit-time abort showed: a native thread delayed past interpreter finalization),
and prints one line per command with its exit codes. Exit 0 when every launch returned the code
expected of it, 1 otherwise.

`--control` adds the pre-fix way of reading a benchmark's parquet files
(`pq.read_table(io.BytesIO(data))`, then exit) as a bare script, to show that the load does
reproduce the abort on this machine: it aborted (exit 134, "terminate called without an active
exception") in 16 of 66 launches beside two busy loops here, while `parquet_table`, the
harness's reader, never did.

    python perf/clean_exit.py --runs 40            # 200 CLI launches under load
    python perf/clean_exit.py --runs 5 --control   # with the abort reproduced beside them
    python perf/clean_exit.py --runs 40 --load 0   # beside a real load, e.g. `make reference`
"""

from __future__ import annotations

import argparse
import collections
import itertools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "results" / "demo"
BENCH = ROOT / "harness" / "embedded" / "assets" / "minibench"

# The pre-fix reader, as a bare script: read every mini-bench parquet file through a Python file
# object, then let the interpreter finalize.
CONTROL = f"""
import io, pathlib
import pyarrow.parquet as pq
for f in sorted(pathlib.Path({str(BENCH)!r}).rglob("*.parquet")):
    pq.read_table(io.BytesIO(f.read_bytes()))
"""


def commands(work: Path, cli: list[str]) -> dict[str, tuple[list[str], int]]:
    """name -> (argv, expected exit code). `check` compares a committed run with itself (exit 0)
    and the leaderboard puts two committed runs side by side, both on a copy taken at the start
    (so a `make reference` running beside it changes nothing); the run is the smallest real one:
    vanilla on 4 forget cloze questions, no stages."""
    for name in ("vanilla", "npo"):
        shutil.copytree(DEMO / "runs" / name, work / "demo" / name)
    vanilla, npo = str(work / "demo" / "vanilla"), str(work / "demo" / "npo")
    return {
        "bench-info": ([*cli, "bench-info", "--bench", str(BENCH), "--forget", "5", "--json"], 0),
        "list": ([*cli, "list"], 0),
        "leaderboard": ([*cli, "leaderboard", vanilla, npo, "--out", str(work / "board")], 0),
        "check": ([*cli, "check", vanilla, "--baseline", vanilla], 0),
        "run": (
            [*cli, "run", "--forget", "15", "--sets", "forget", "--tasks", "cloze", "--limit", "4", "--shots", "0"]
            + ["--judge", "none", "--stages", "--quiet", "--out", str(work / "run-{i}")],
            0,
        ),
    }


def stress(runs: int, load: int, control: bool, cli: list[str]) -> dict[str, collections.Counter]:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    codes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plan = commands(Path(tmp), cli)
            if control:
                plan["control: pre-fix parquet read"] = ([sys.executable, "-c", CONTROL], 0)
            for i, (name, (argv, _)) in itertools.product(range(runs), plan.items()):
                argv = [a.replace("{i}", str(i)) for a in argv]
                done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                codes[name][done.returncode] += 1
                if done.returncode != plan[name][1]:
                    tail = done.stderr.strip().splitlines()[-1:] or [""]
                    print(f"  {name} launch {i + 1}: exit {done.returncode} {tail[0][:120]}", flush=True)
            expected = {name: code for name, (_, code) in plan.items()}
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return {name: codes[name] for name in expected} | {"_expected": collections.Counter(expected)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=40, help="launches per command (default 40: 200 in all)")
    p.add_argument("--load", type=int, default=2, help="busy-loop processes beside the launches (default 2)")
    p.add_argument("--control", action="store_true", help="also launch the pre-fix parquet read, to show the abort")
    args = p.parse_args(argv)
    cli = [sys.executable, "-m", "mmunlearn.harness.app.cli"]
    result = stress(args.runs, args.load, args.control, cli)
    expected = result.pop("_expected")
    failed = 0
    for name, counts in result.items():
        wrong = sum(n for code, n in counts.items() if code != expected[name])
        if not name.startswith("control"):
            failed += wrong
        codes = ", ".join(f"exit {code}: {n}" for code, n in sorted(counts.items()))
        print(f"{name:32s} {sum(counts.values()):4d} launches  {codes}  (expected exit {expected[name]})")
    launched = sum(sum(c.values()) for name, c in result.items() if not name.startswith("control"))
    print(f"commands: {launched} launches under {args.load} busy loops, {failed} with another exit code")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
