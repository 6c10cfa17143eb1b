"""Intervals for a run's aggregates from its per-question records.

Every figure in results.json ``metrics`` that is a number and not a count gets, where its
sampling can be bootstrapped, a profile-level interval (harness.core.statistics) in
results.json ``intervals``, in the same nesting: ``intervals[set][key][mode][metric] =
Interval.to_dict()``. Task aggregates are means of a per-question score, so one function serves
every task (``task_intervals``); a stage's figures are its own business (``Stage.intervals`` in
harness.core.stages), made with the helpers here. Before anything is written, ``verify`` keeps
only entries whose value equals the reported figure (to ``TOLERANCE``): an interval that does not
belong to its figure is never written, and a figure that is None ("not available") never gets one.

Figures that are already a test or no sample statistic at all (a KS p-value, a training step)
get an entry with ``se``, ``lo`` and ``hi`` None, ``resamples`` 0 and a ``method`` that says
why (``no_interval``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from mmunlearn.harness.core.contracts import SampleResult
from mmunlearn.harness.core.results import is_count_metric
from mmunlearn.harness.core.statistics import (
    LEVEL,
    RESAMPLES,
    Interval,
    IntervalKind,
    Profiles,
    Values,
    profile_codes,
    draw_profile_counts,
    interval_method,
    interval_tail,
    profile_bootstrap_mean,
    recovery_bootstrap,
    stratified_auc_bootstrap,
)

# An interval's value may differ from the reported figure by float summation order only.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Bootstrap:
    """How a run's intervals are drawn: B resamples of profiles from ``default_rng(seed)`` (the run's
    --seed), percentile interval at ``level`` (expanded: Hesterberg's widening for few profiles).
    Every cell and figure uses the same seed, so the same records give the same intervals."""

    resamples: int = RESAMPLES
    seed: int = 0
    level: float = LEVEL
    interval: IntervalKind = "expanded"

    def manifest(self) -> dict[str, Any]:
        """What results.json's manifest records under "intervals"."""
        return {
            "resamples": self.resamples,
            "seed": self.seed,
            "level": self.level,
            "interval": self.interval,
            "unit": "profile",
        }

    def _kw(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "seed": self.seed, "level": self.level, "interval": self.interval}

    def mean(self, values: Values, profiles: Profiles) -> Interval:
        return profile_bootstrap_mean(values, profiles, **self._kw())

    def auc(self, members: Values, member_profiles: Profiles, nonmembers: Values, nonmember_profiles: Profiles):
        """AUC oriented as given (higher = member); see harness.core.statistics.stratified_auc_bootstrap."""
        return stratified_auc_bootstrap(members, member_profiles, nonmembers, nonmember_profiles, **self._kw())

    def recovery(self, original: Values, unlearned: Values, relearned: Values, profiles: Profiles) -> Interval:
        return recovery_bootstrap(original, unlearned, relearned, profiles, **self._kw())


def no_interval(value: float | None, why: str, n_clusters: int = 0) -> dict[str, Any]:
    """The entry of a figure that has no bootstrap interval: its value, se/lo/hi None, and why."""
    return Interval(value, None, None, None, n_clusters, why, resamples=0).to_dict()


# ---------------------------------------------------------------- means, vectorised over metrics
def mean_intervals(columns: Mapping[str, Sequence[float | None]], profiles: Sequence[Any], boot: Bootstrap):
    """{metric: Interval} of the mean of each column (one score per question, None = not scored),
    every column of the same questions and ``profiles``. Columns scored on the same questions share
    one B x P resample-weight matrix, so a cell's metrics cost one draw and one matrix product; each
    interval is what ``profile_bootstrap_mean(column, profiles)`` gives with the same seed (up to
    the rounding of a matrix product against a vector product)."""
    names = list(columns)
    if not names:
        return {}
    x = np.array([[np.nan if v is None else float(v) for v in columns[n]] for n in names], dtype=np.float64).T
    x = x.reshape(len(profiles), len(names))
    missing = np.isnan(x)
    groups: dict[bytes, list[int]] = {}
    for j in range(len(names)):
        groups.setdefault(np.packbits(missing[:, j]).tobytes(), []).append(j)
    method = interval_method("profile bootstrap mean", boot.interval)
    out: dict[str, Interval] = {}
    for cols in groups.values():
        keep = ~missing[:, cols[0]]
        codes, n_profiles = profile_codes([p for p, k in zip(profiles, keep) if k], int(keep.sum()))
        if n_profiles == 0:
            for j in cols:
                out[names[j]] = Interval(None, None, None, None, 0, method, boot.level, boot.resamples, boot.seed)
            continue
        xs = x[keep][:, cols]
        sums = np.zeros((n_profiles, len(cols)))
        np.add.at(sums, codes, xs)
        counts = np.bincount(codes, minlength=n_profiles).astype(np.float64)
        w = draw_profile_counts(np.random.default_rng(boot.seed), n_profiles, boot.resamples)
        stats = (w @ sums) / (w @ counts)[:, None]  # B x metrics
        tail = interval_tail(boot.level, n_profiles, boot.interval)
        lo, hi = np.quantile(stats, [tail, 1.0 - tail], axis=0)
        se = stats.std(axis=0, ddof=1)
        # every question scored alike (or every resample agrees): exactly (0, v, v), not v +/- rounding
        constant = (xs.min(axis=0) == xs.max(axis=0)) | (stats.min(axis=0) == stats.max(axis=0))
        values = sums.sum(axis=0) / counts.sum()
        for i, j in enumerate(cols):
            if constant[i]:
                v = float(values[i])
                s, a, b = 0.0, v, v
            else:
                s, a, b = float(se[i]), float(lo[i]), float(hi[i])
            out[names[j]] = Interval(
                float(values[i]), s, a, b, n_profiles, method, boot.level, boot.resamples, boot.seed
            )
    return out


def max_of_means_interval(
    groups: Mapping[str, tuple[Sequence[float], Sequence[Any]]], boot: Bootstrap, method: str
) -> Interval:
    """max over groups of each group's mean (e.g. the worst answer kind's degenerate share), with
    a profile bootstrap that resamples the union of the groups' profiles once and takes every
    group's questions of each drawn profile: the max is recomputed per resample, not picked once.
    groups: name -> (values, profile ids). Resamples where no group has a question are dropped."""
    ids: dict[Any, int] = {}
    parts = []
    for values, profiles in groups.values():
        x = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        keep = ~np.isnan(x)
        codes = np.asarray([ids.setdefault(p, len(ids)) for p, k in zip(profiles, keep) if k], dtype=np.intp)
        parts.append((x[keep], codes))
    n_profiles = len(ids)
    full = interval_method(method, boot.interval)
    if n_profiles == 0 or all(len(x) == 0 for x, _ in parts):
        return Interval(None, None, None, None, 0, full, boot.level, boot.resamples, boot.seed)
    sums = np.zeros((n_profiles, len(parts)))
    counts = np.zeros((n_profiles, len(parts)))
    for j, (x, codes) in enumerate(parts):
        sums[:, j] = np.bincount(codes, weights=x, minlength=n_profiles)
        counts[:, j] = np.bincount(codes, minlength=n_profiles)
    total = counts.sum(axis=0)
    value = float(max(s / c for s, c in zip(sums.sum(axis=0), total) if c > 0))
    w = draw_profile_counts(np.random.default_rng(boot.seed), n_profiles, boot.resamples)
    den = w @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(den > 0, (w @ sums) / np.where(den > 0, den, 1.0), -np.inf)
    stat = shares.max(axis=1)
    ok = np.isfinite(stat)
    dropped = int(boot.resamples - ok.sum())
    stat = stat[ok]
    if len(stat) < 2:
        return Interval(value, None, None, None, n_profiles, full, boot.level, boot.resamples, boot.seed, dropped)
    if stat.min() == stat.max():
        se, lo, hi = 0.0, float(stat[0]), float(stat[0])
    else:
        tail = interval_tail(boot.level, n_profiles, boot.interval)
        lo, hi = (float(v) for v in np.quantile(stat, [tail, 1.0 - tail]))
        se = float(stat.std(ddof=1))
    return Interval(value, se, lo, hi, n_profiles, full, boot.level, boot.resamples, boot.seed, dropped)


# ---------------------------------------------------------------- task cells
def _number(v: Any) -> TypeGuard[float]:
    """A finite int or float (not a bool): a figure that can have an interval."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def cell_intervals(records: Sequence[Mapping], aggregate: Mapping[str, Any], boot: Bootstrap) -> dict[str, dict]:
    """Intervals of one (set, task, mode) cell: for every numeric, non-count figure of the task's
    ``aggregate`` that some record scores (``scores[metric]``), the profile-bootstrap mean over the
    records not excluded as in-context examples (``extra["excluded"]``). Whether the figure really
    is that mean is left to ``verify``, which drops it if not."""
    kept = [r for r in records if not (r.get("extra") or {}).get("excluded")]
    wanted = [
        m
        for m, v in aggregate.items()
        if _number(v) and not is_count_metric(m) and any(m in (r.get("scores") or {}) for r in kept)
    ]
    columns = {m: [(r.get("scores") or {}).get(m) for r in kept] for m in wanted}
    found = mean_intervals(columns, [r["profile_id"] for r in kept], boot)
    return {m: iv.to_dict() for m, iv in found.items()}


def task_intervals(metrics: Mapping, plan: Sequence[tuple], tasks: Mapping, store, boot: Bootstrap) -> dict:
    """intervals[set][task][mode] for every cell of the run's plan, from the stored records of the
    same questions ``aggregate_into`` reads (harness.app.runner)."""
    out: dict = {}
    for set_name, task_name, mode, qs in plan:
        task = tasks[task_name]
        records = [r for q in qs if (r := store.get(task.sample_id(q))) is not None]
        records = [s.to_dict() for s in task.settle([SampleResult.from_dict(r) for r in records])]
        aggregate = metrics.get(set_name, {}).get(task_name, {}).get(mode, {})
        found = cell_intervals(records, aggregate, boot)
        out.setdefault(set_name, {}).setdefault(task_name, {})[mode] = found
    return out


# ---------------------------------------------------------------- checking and merging
def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(b))


def verify(intervals: Mapping, metrics: Mapping) -> tuple[dict, list[str]]:
    """(the entries that belong to their figure, "set/key/mode/metric" of those dropped).

    Kept: the figure in ``metrics`` is a number, not a count, and the entry's value equals it to
    TOLERANCE; the kept entry's value is set to the reported figure exactly. An entry without a
    figure to belong to, with a None value or with a value that differs is dropped and named."""
    kept: dict = {}
    dropped: list[str] = []
    for set_name, keys in intervals.items():
        for key, modes in keys.items():
            for mode, entries in modes.items():
                cell = metrics.get(set_name, {}).get(key, {}).get(mode, {})
                good = {}
                for metric, entry in entries.items():
                    figure = cell.get(metric)
                    value = entry.get("value") if isinstance(entry, Mapping) else None
                    if figure is None and value is None:
                        continue  # "not available": no interval, and nothing wrong
                    if (
                        _number(figure)
                        and _number(value)
                        and not is_count_metric(metric)
                        and _close(float(value), float(figure))
                    ):
                        good[metric] = _at(entry, figure)
                    else:
                        dropped.append(f"{set_name}/{key}/{mode}/{metric}")
                if good:
                    kept.setdefault(set_name, {}).setdefault(key, {})[mode] = good
    return kept, dropped


def _at(entry: Mapping, figure: float) -> dict:
    """The entry reporting the figure itself; an end that lies past it by rounding only (an
    interval of identical resamples) is moved onto it."""
    out = {**entry, "value": figure}
    if _number(out.get("lo")) and out["lo"] > figure and _close(out["lo"], figure):
        out["lo"] = figure
    if _number(out.get("hi")) and out["hi"] < figure and _close(out["hi"], figure):
        out["hi"] = figure
    if _number(out.get("lo")) and _number(out.get("hi")):
        out["half_width"] = (out["hi"] - out["lo"]) / 2.0
    return out


def merge(into: dict, found: Mapping) -> dict:
    """Merge intervals[set][key][mode] = {metric: entry} into ``into`` (a later cell replaces an
    earlier one of the same set, key and mode)."""
    for set_name, keys in found.items():
        for key, modes in keys.items():
            into.setdefault(set_name, {}).setdefault(key, {}).update(modes)
    return into
