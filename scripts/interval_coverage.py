"""How often the 95% profile-bootstrap interval covers the true mean, plain percentile against
expanded percentile (the default), on clustered binomial data of known mean: profile accuracy
~ Beta(1.8, 2.2) (mean 0.45, ICC 0.2), 9 questions per profile, as in
tests/test_statistics.py::test_interval_covers_the_true_mean_95_percent_of_the_time.

    python scripts/interval_coverage.py [--profiles 5 10 25 50] [--sims 2000] [--resamples 500]

docs/statistics.md quotes its output.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mmunlearn.harness.core.statistics import profile_bootstrap_mean

A, B, PER = 1.8, 2.2, 9


def coverage(n_profiles: int, sims: int, resamples: int, interval: str) -> float:
    rng = np.random.default_rng(2024 + n_profiles)  # the same data for both kinds of interval
    truth = A / (A + B)
    profiles = np.repeat(np.arange(n_profiles), PER)
    covered = 0
    for sim in range(sims):
        values = rng.binomial(1, np.repeat(rng.beta(A, B, size=n_profiles), PER)).astype(float)
        iv = profile_bootstrap_mean(values, profiles, resamples=resamples, seed=sim, interval=interval)
        covered += iv.lo <= truth <= iv.hi
    return covered / sims


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", type=int, nargs="+", default=[5, 10, 25, 50])
    p.add_argument("--sims", type=int, default=2000)
    p.add_argument("--resamples", type=int, default=500)
    args = p.parse_args(argv)
    print(f"coverage of the nominal 95% interval, {args.sims} simulations, B = {args.resamples}")
    print("| profiles | plain percentile | expanded percentile |")
    print("|---|---|---|")
    for n in args.profiles:
        plain, expanded = (coverage(n, args.sims, args.resamples, kind) for kind in ("percentile", "expanded"))
        print(f"| {n} | {plain:.1%} | {expanded:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
