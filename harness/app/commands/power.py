"""`mmunlearn power`: the smallest difference a benchmark split can detect, before spending a GPU-week.

Per (set, task, mode): the minimum detectable difference in an accuracy at the given power and
level, unpaired (two separate runs' figures) and paired (two runs on the same questions, the way
`check` compares), from the split's profile and question counts, an assumed accuracy and the
clustering of a person's questions (design effect 1 + (m - 1) ICC, m questions per profile).
`--from-run` takes the accuracy and ICC of each cell from a finished run's answers instead.
`--published mllmu-bench` uses MLLMU-Bench's published counts (no download).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import pandas as pd

from mmunlearn.harness.app.defaults import DEFAULT_BENCH
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.statistics import design_effect, estimate_icc, minimum_detectable_difference

NAME = "power"
HELP = "minimum detectable difference per set, task and mode of a benchmark split (paired and unpaired)"

# MLLMU-Bench as published (Liu et al. 2024, Table 1): 500 fictitious profiles and 153 real
# celebrities; 11,530 multiple-choice, 4,612 generation and 4,612 cloze questions over the 653
# profiles, half of each in each mode. Per profile and mode: 11,530 / 653 / 2 = 8.83
# multiple-choice, 4,612 / 653 / 2 = 3.53 generation and cloze questions. Forget 5/10/15% = 25/50/75
# profiles (the test set asks about the same people); retain = the other fictitious profiles.
MLLMU_FICTITIOUS, MLLMU_CELEBRITIES = 500, 153
MLLMU_PER_PROFILE_MODE = {"classification": 11530 / 653 / 2, "generation": 4612 / 653 / 2, "cloze": 4612 / 653 / 2}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="benchmark folder or hub id (default: mini-bench)")
    p.add_argument(
        "--benchmark", default=None, help="the --bench folder's benchmark (default: recognised from its layout)"
    )
    p.add_argument(
        "--forget", type=int, default=None, help="forget split (default: the benchmark's own, 5 for MLLMU-Bench)"
    )
    p.add_argument(
        "--published",
        choices=("mllmu-bench",),
        default=None,
        help="use a benchmark's published counts instead of reading it (no download)",
    )
    p.add_argument("--accuracy", type=float, default=0.5, help="assumed accuracy p (default 0.5: the widest case)")
    p.add_argument(
        "--icc",
        type=float,
        default=0.2,
        help="assumed correlation of one profile's answers (default 0.2; --from-run measures it)",
    )
    p.add_argument(
        "--rho",
        type=float,
        default=0.5,
        help="paired: assumed correlation of two runs' answers to the same question (default 0.5)",
    )
    p.add_argument("--power", type=float, default=0.8, help="power (default 0.8)")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided level (default 0.05)")
    p.add_argument(
        "--from-run",
        default=None,
        metavar="RUN",
        help="take each cell's accuracy and ICC from a finished run's samples.jsonl (first metric of each task)",
    )


def _counts(args) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(set, task, mode) -> (questions, profiles)."""
    if args.published:
        if args.forget not in (None, 5, 10, 15):
            raise ConfigError(f"--published mllmu-bench has forget splits 5, 10 and 15, got {args.forget}")
        forget = round(MLLMU_FICTITIOUS * (args.forget or 5) / 100)
        profiles = {
            "forget": forget,
            "test": forget,
            "retain": MLLMU_FICTITIOUS - forget,
            "celebrity": MLLMU_CELEBRITIES,
        }
        return {
            (s, t, m): (round(n * per), n)
            for s, n in profiles.items()
            for t, per in MLLMU_PER_PROFILE_MODE.items()
            for m in ("image_text", "text_only")
        }
    from mmunlearn.harness.core.bench import load_benchmark

    bench = load_benchmark(args.bench, forget=args.forget, benchmark=args.benchmark)
    out = {}
    for s in bench.sets:  # profiles per cell: a cell may ask about only some of its set's people
        for t in bench.question_types:
            for m in bench.cells(s, t):
                qs = bench.questions(sets=[s], tasks=[t], modes=[m])
                out[s, t, m] = (len(qs), len({q.profile_id for q in qs}))
    return out


def _observed(run: str) -> dict[tuple[str, str, str], tuple[float, float | None]]:
    """(set, task, mode) -> (accuracy, ICC) from a run's answers (each task's first metric)."""
    from mmunlearn.harness.app.paired import run_samples
    from mmunlearn.harness.core.contracts import get_task
    from mmunlearn.harness.core.results import load_results

    folder = str(Path(load_results(run)["_path"]).parent)
    out = {}
    for cell, rows in run_samples(folder).items():
        try:
            metric = get_task(cell[1]).metrics[0]
        except Exception:
            continue
        pairs = [(p, float(sc[metric])) for p, sc in rows.values() if isinstance(sc.get(metric), (int, float))]
        if pairs:
            vals = [v for _p, v in pairs]
            out[cell] = (sum(vals) / len(vals), estimate_icc(vals, [p for p, _v in pairs]))
    return out


def run(args: argparse.Namespace) -> int:
    for name in ("accuracy", "icc", "rho", "power", "alpha"):
        v = getattr(args, name)
        if not (0.0 < v < 1.0 or (name in ("icc", "rho") and 0.0 <= v < 1.0)):
            raise ConfigError(f"--{name} must lie in (0, 1), got {v}")
    observed = _observed(args.from_run) if args.from_run else {}
    rows = []
    for (s, t, m), (n, k) in _counts(args).items():
        if n < 1 or k < 1:
            continue
        p, icc = args.accuracy, args.icc
        if (s, t, m) in observed:
            p_obs, icc_obs = observed[s, t, m]
            p = min(max(p_obs, 0.05), 0.95)  # a cell at 0 or 1 has no variance to plan with
            icc = args.icc if icc_obs is None else icc_obs
        kw = dict(icc=icc, alpha=args.alpha, power=args.power)
        rows.append(
            {
                "set": s,
                "task": t,
                "mode": m,
                "profiles": k,
                "questions": n,
                "p": round(p, 3),
                "icc": round(icc, 3),
                "deff": round(design_effect(n / k, icc), 2),
                "mdd unpaired": round(minimum_detectable_difference(p, n, k, **kw), 3),
                "mdd paired": round(minimum_detectable_difference(p, n, k, paired=True, rho=args.rho, **kw), 3),
            }
        )
    if not rows:
        raise ConfigError("no questions to plan with")
    source = "MLLMU-Bench (published counts)" if args.published else args.bench
    print(
        f"minimum detectable difference at power {args.power:g}, two-sided alpha {args.alpha:g}: {source}, "
        f"forget {args.forget}%"
    )
    note = "p and ICC per cell from " + args.from_run if args.from_run else f"p {args.accuracy:g}, ICC {args.icc:g}"
    print(f"assumed: {note}; paired rho {args.rho:g} (paired: two runs on the same questions, as `check` compares)")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0
