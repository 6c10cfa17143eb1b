"""The three claims of the MANU paper on a demo folder (`make run` -> runs/demo, `make reference`
-> results/demo), each restated as a paired comparison against vanilla over the same questions,
pooled over seeds (a run of several seeds contributes each question's mean over its seeds), with a
95% profile-bootstrap interval (harness/core/statistics.py, profile_bootstrap_of_means):

1. GA-style methods, which unlearn on image+text data, forget more in image+text than in
   text-only: mean over the GA family (ga, grad_diff, kl_min, npo) of
   (forget drop in image_text - forget drop in text_only) > 0.
2. MANU (the demo's alpha, the `manu` run) forgets in both modes while keeping retain: its forget
   drop > 0 in each mode, and the GA family's mean retain loss exceeds MANU's.
3. A larger alpha forgets more and keeps less: between consecutive alphas of the MANU sweep, the
   forget drop (mean of both modes) and the retain loss (mean of both modes) both grow.

Which figures count as forgetting and which as kept comes from the runs' objective
(harness.core.objectives, recorded in results.json; absent: forget-both, the MANU paper's target,
under which the claims read as above): a figure that should fall is judged by its drop, one that
should stay by its loss (forget-visual keeps forget text-only: claim 2 then asks MANU to keep it
and claim 3 counts its loss as keeping less). The demo's runs must share one objective.

A drop is vanilla - method on the same question; a claim's part HOLDS when its interval lies
above 0, FAILS when it lies below 0, and is NOT RESOLVED when it contains 0. A claim holds when
every part does, fails when any part fails, and is otherwise not resolved.

    python scripts/demo_claims.py results/demo [--task classification --metric accuracy]

Prints one line per part and per claim with its figures; exits 1 if a claim fails (not resolved
is not a failure: the demo cannot tell).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mmunlearn.harness.app.paired import question_scores
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.objectives import DEFAULT_OBJECTIVE, check_objective, objective_of, should_fall
from mmunlearn.harness.core.results import load_results
from mmunlearn.harness.core.statistics import Interval, profile_bootstrap_of_means

GA_FAMILY = ("ga", "grad_diff", "kl_min", "npo")
MODES = ("image_text", "text_only")
JUDGED_SETS = ("forget", "retain")
HOLDS, FAILS, OPEN = "HOLDS", "FAILS", "NOT RESOLVED"


def load(demo: Path) -> dict[str, dict]:
    """Run folder name -> results (a seed aggregate or a single run) of every run of a demo root."""
    return {p.parent.name: load_results(p.parent) for p in sorted((demo / "runs").glob("*/results.json"))}


def objective(runs: dict[str, dict]) -> str:
    """The objective the demo's unlearning runs share (vanilla, the reference, is not judged);
    refused when they differ: the claims compare them with each other."""
    found = {objective_of(r) for name, r in runs.items() if name != "vanilla"} or {DEFAULT_OBJECTIVE}
    if len(found) > 1:
        raise ConfigError(f"the demo's runs record different objectives ({', '.join(sorted(found))}); claims need one")
    return check_objective(found.pop())


def directions(obj: str) -> dict[bool, dict[str, list[str]]]:
    """{True: set -> the modes whose knowledge should fall, False: set -> those to keep}."""
    return {f: {s: [m for m in MODES if should_fall(obj, s, m) == f] for s in JUDGED_SETS} for f in (True, False)}


def _modes(modes: list[str]) -> str:
    return "modes averaged" if len(modes) > 1 else ", ".join(modes)


def alpha_of(run: dict) -> float:
    return float(run["manifest"]["method"]["params"]["alpha"])


class Drops:
    """Per-profile sums of vanilla - method over the questions both answered, per (run, set, mode),
    on one profile index per set (so every term of a claim is resampled by the same draw)."""

    def __init__(self, runs: dict[str, dict], task: str, metric: str):
        self.runs, self.task, self.metric = runs, task, metric
        self.profiles: dict[str, list[str]] = {}

    def term(self, name: str, set_name: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
        cell = (set_name, self.task, mode)
        base = question_scores(self.runs["vanilla"], cell, self.metric) or {}
        other = question_scores(self.runs[name], cell, self.metric) or {}
        index = self.profiles.setdefault(set_name, sorted({p for p, _v in base.values()}))
        pos = {p: i for i, p in enumerate(index)}
        sums, counts = np.zeros(len(index)), np.zeros(len(index))
        for qid, (profile, v) in base.items():
            if qid in other and profile in pos:
                sums[pos[profile]] += v - other[qid][1]
                counts[pos[profile]] += 1
        return sums, counts


def part(text: str, terms: list[tuple[np.ndarray, np.ndarray]], statistic) -> tuple[str, str, Interval]:
    sums = np.vstack([s for s, _c in terms])
    counts = np.vstack([c for _s, c in terms])
    iv = profile_bootstrap_of_means(sums, counts, statistic)
    if iv.lo is None or iv.hi is None or iv.value is None:
        return text, OPEN, iv
    verdict = HOLDS if iv.lo > 0 else FAILS if iv.hi < 0 else OPEN
    return text, verdict, iv


def claims(runs: dict[str, dict], task: str, metric: str) -> list[tuple[str, str, list[tuple[str, str, Interval]]]]:
    """[(claim, verdict, [(part, verdict, interval)])]."""
    d = Drops(runs, task, metric)
    ga = [m for m in GA_FAMILY if m in runs]
    fall, keep = (directions(objective(runs))[f] for f in (True, False))
    out = []

    terms = [d.term(m, "forget", mode) for m in ga for mode in MODES]  # m0 img, m0 txt, m1 img, ...
    parts = [
        part(
            f"GA family ({', '.join(ga)}): mean forget drop image_text - text_only",
            terms,
            lambda x: (x[:, 0::2] - x[:, 1::2]).mean(axis=1),
        )
    ]
    out.append(("1 GA family forgets more in image+text than text-only", parts))

    parts = [
        part(f"MANU forget drop {mode}", [d.term("manu", "forget", mode)], lambda x: x[:, 0]) for mode in fall["forget"]
    ]
    for set_name in ("retain", "forget"):  # what MANU should keep: its loss against the GA family's
        if not (modes := keep[set_name]):
            continue
        kept = [d.term("manu", set_name, mode) for mode in modes] + [
            d.term(m, set_name, mode) for m in ga for mode in modes
        ]
        parts.append(
            part(
                f"GA family mean {set_name} loss - MANU {set_name} loss ({_modes(modes)})",
                kept,
                lambda x, k=len(modes): x[:, k:].mean(axis=1) - x[:, :k].mean(axis=1),
            )
        )
    forgets = "both modes" if fall["forget"] == list(MODES) else " and ".join(fall["forget"])
    keeps = "retain" + (f" and forget {' and '.join(keep['forget'])}" if keep["forget"] else "")
    out.append((f"2 MANU (alpha {alpha_of(runs['manu']):g}) forgets in {forgets}, keeps {keeps}", parts))

    sweep = sorted((alpha_of(run), name) for name, run in runs.items() if run["manifest"]["method"]["name"] == "manu")
    parts = []
    for (a0, n0), (a1, n1) in zip(sweep, sweep[1:]):
        for set_name in JUDGED_SETS:
            for falls, what in ((True, "drop"), (False, "loss")):  # more forgetting, less kept
                if not (modes := (fall if falls else keep)[set_name]):
                    continue
                terms = [d.term(n1, set_name, mode) for mode in modes] + [d.term(n0, set_name, mode) for mode in modes]
                parts.append(
                    part(
                        f"{set_name} {what} at alpha {a1:g} - at alpha {a0:g} ({_modes(modes)})",
                        terms,
                        lambda x, k=len(modes): x[:, :k].mean(axis=1) - x[:, k:].mean(axis=1),
                    )
                )
    out.append(("3 larger alpha forgets more and keeps less", parts))

    def verdict(ps):
        vs = [v for _t, v, _i in ps]
        return FAILS if FAILS in vs else HOLDS if vs and all(v == HOLDS for v in vs) else OPEN

    return [(name, verdict(ps), ps) for name, ps in out]


def _fmt(iv: Interval) -> str:
    if iv.value is None:
        return "no figure"
    if iv.lo is None or iv.hi is None:
        return f"{iv.value:+.3f} (no interval)"
    return f"{iv.value:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path)
    p.add_argument("--task", default="classification")
    p.add_argument("--metric", default="accuracy")
    args = p.parse_args(argv)
    runs = load(args.demo)
    try:
        objective(runs)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seeds = {name: len((r.get("seeds") or {}).get("seeds") or [0]) for name, r in runs.items()}
    print(f"[{args.task} {args.metric}] seeds per run: " + ", ".join(f"{k} {v}" for k, v in seeds.items()))
    failed = 0
    for name, verdict, parts in claims(runs, args.task, args.metric):
        print(f"{verdict:12s} claim {name}")
        for text, v, iv in parts:
            print(f"    {v:12s} {text}: {_fmt(iv)}")
        failed += verdict == FAILS
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
