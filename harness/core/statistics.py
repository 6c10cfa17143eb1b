"""Uncertainty for the figures the harness reports: profile-level bootstrap intervals, paired
differences, seed summaries and power. Pure numpy/scipy: no torch, no files.

Why profiles: the answers about one person are correlated, so a question-level bootstrap or a
binomial interval is too narrow by the design effect 1 + (m - 1) * ICC (DESIGN.md, "Statistics
conventions"). Everything here resamples *profiles* and takes all questions of each drawn profile.

Conventions shared by every function:

* A resample is a vector of counts over the P profiles: P draws with replacement, equal
  probabilities (a Multinomial(P, 1/P) vector). B of them form a B x P weight matrix, and every
  resampled statistic is a weighted sum over per-profile totals, so B statistics cost a few matrix
  products instead of B Python loops. Randomness comes only from ``np.random.default_rng(seed)``:
  the same inputs and seed give the same interval, bit for bit.
* A mean over questions is the ratio estimator sum(question scores) / number of questions over
  the drawn profiles, so a profile with more questions weighs more, as it does in the point figure.
* ``None`` or NaN scores are dropped before anything else (a question that could not be scored
  is not a zero). A profile whose questions are all dropped is not counted.
* "Not available" is ``None``, never NaN or 0: zero profiles give an ``Interval`` whose value, se,
  lo and hi are all ``None`` with ``n_clusters == 0``; one profile gives se 0 and [v, v].
* Intervals are *expanded percentile* intervals by default (``interval="percentile"`` gives the
  plain one): the percentile bootstrap of a mean under-covers with few clusters, because the
  bootstrap variance is (P - 1) / P of the unbiased one and the normal quantile ignores that
  the variance is estimated. Hesterberg ("What teachers should know about the bootstrap", 2015)
  widens the percentiles to alpha' / 2 = Phi(-sqrt(P / (P - 1)) * t(1 - alpha / 2, P - 1)), e.g.
  1.76% / 98.24% at P = 25. `scripts/interval_coverage.py` measures both on clustered binomial data (9 questions per
  profile, ICC 0.2): 84% / 91% / 94% / 94% plain against 91% / 94% / 95% / 94% expanded at
  P = 5 / 10 / 25 / 50 profiles.
* se is the standard deviation (ddof=1) of the B resampled statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as _stats

Values = Sequence[float | None] | npt.NDArray[Any]
Profiles = Sequence[Hashable] | npt.NDArray[Any]
IntervalKind = Literal["expanded", "percentile"]

RESAMPLES = 1000
LEVEL = 0.95
# Recovery resamples whose denominator (mean original - mean unlearned) is this close to 0 are dropped.
DENOMINATOR_EPS = 1e-12


def _plain(x: float | None) -> float | None:
    """A JSON-plain float: None for missing or non-finite, never a numpy scalar."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _json_fields(obj: Any) -> dict[str, Any]:
    """A result dataclass as plain JSON, with its half-width: floats through ``_plain``."""
    out = {
        k: _plain(float(v)) if isinstance(v, (float, np.floating)) else int(v) if isinstance(v, np.integer) else v
        for k, v in asdict(obj).items()
    }
    out["half_width"] = _plain(obj.half_width)
    return out


@dataclass(frozen=True)
class Interval:
    """A point figure with its bootstrap uncertainty; ``None`` fields mean "not available".

    ``n_clusters`` is the number of profiles the figure rests on (both samples' for an AUC),
    ``dropped`` the resamples left out as undefined (only recovery drops any)."""

    value: float | None
    se: float | None
    lo: float | None
    hi: float | None
    n_clusters: int
    method: str
    level: float = LEVEL
    resamples: int = 0
    seed: int | None = None
    dropped: int = 0

    @property
    def half_width(self) -> float | None:
        """(hi - lo) / 2: the "+/-" a table prints (percentile intervals need not be symmetric)."""
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: Python floats, ``None`` for anything missing or non-finite."""
        return _json_fields(self)


@dataclass(frozen=True)
class PairedDifference:
    """run - base on the same questions, with a profile-bootstrap interval and two-sided p-value."""

    diff: float | None
    se: float | None
    lo: float | None
    hi: float | None
    p_value: float | None
    n_profiles: int
    n_questions: int
    method: str
    level: float = LEVEL
    resamples: int = 0
    seed: int | None = None

    @property
    def half_width(self) -> float | None:
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2.0

    def to_dict(self) -> dict[str, Any]:
        return _json_fields(self)


# ---------------------------------------------------------------- internals
def _floats(values: Values, name: str) -> npt.NDArray[np.float64]:
    """Scores as a float array, ``None`` -> NaN (dropped later), so lists from JSON work as is."""
    try:
        arr = np.asarray(values)
        if arr.dtype == object:
            arr = np.asarray([np.nan if v is None else v for v in arr.reshape(-1)])
        return arr.astype(np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: scores must be numbers or None") from err


def profile_codes(profiles: Profiles, n: int) -> tuple[npt.NDArray[np.intp], int]:
    """Profile ids -> codes 0..P-1 in order of first appearance (any hashable id works)."""
    if len(profiles) != n:
        raise ValueError(f"{len(profiles)} profile ids for {n} scores")
    index: dict[Hashable, int] = {}
    codes = np.empty(n, dtype=np.intp)
    for i, p in enumerate(profiles):
        if p is None:
            raise ValueError("a question without a profile id cannot be resampled by profile")
        codes[i] = index.setdefault(p, len(index))
    return codes, len(index)


def _check(resamples: int, level: float, interval: IntervalKind) -> None:
    if interval not in ("expanded", "percentile"):
        raise ValueError(f"interval must be 'expanded' or 'percentile', got {interval!r}")
    if resamples < 2:
        raise ValueError(f"need at least 2 resamples for a standard error, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _kept(
    columns: list[npt.NDArray[np.float64]], profiles: Profiles
) -> tuple[list[npt.NDArray[np.float64]], npt.NDArray[np.intp], int]:
    """Drop questions where any column is NaN, then code the remaining questions' profiles."""
    n = len(columns[0])
    if len(profiles) != n:
        raise ValueError(f"{len(profiles)} profile ids for {n} scores")
    keep = np.ones(n, dtype=bool)
    for col in columns:
        if len(col) != n:
            raise ValueError("score lists of different lengths: align them question by question first")
        keep &= ~np.isnan(col)
    kept_profiles = [p for p, k in zip(profiles, keep) if k]
    codes, n_profiles = profile_codes(kept_profiles, int(keep.sum()))
    return [col[keep] for col in columns], codes, n_profiles


def _per_profile(x: npt.NDArray[np.float64], codes: npt.NDArray[np.intp], n_profiles: int) -> npt.NDArray[np.float64]:
    return np.bincount(codes, weights=x, minlength=n_profiles).astype(np.float64)


def draw_profile_counts(rng: np.random.Generator, n_profiles: int, resamples: int) -> npt.NDArray[np.float64]:
    """B x P counts: each row is how often each profile was drawn in P draws with replacement
    (Multinomial(P, 1/P)); drawn as indices and counted, which is several times faster."""
    draws = rng.integers(0, n_profiles, size=(resamples, n_profiles))
    draws += (np.arange(resamples) * n_profiles)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * n_profiles)
    return counts.reshape(resamples, n_profiles).astype(np.float64)


def interval_tail(level: float, n_clusters: int, interval: IntervalKind) -> float:
    """Lower percentile of the interval: alpha / 2, or Hesterberg's expanded alpha' / 2."""
    alpha = 1.0 - level
    if interval == "percentile" or n_clusters < 2:
        return alpha / 2.0
    z = math.sqrt(n_clusters / (n_clusters - 1)) * float(_stats.t.ppf(1.0 - alpha / 2.0, n_clusters - 1))
    return float(_stats.norm.sf(z))


def _spread(boot: npt.NDArray[np.float64], tail: float) -> tuple[float, float, float]:
    """(se, lo, hi) of a bootstrap distribution; exactly (0, v, v) when every resample agrees."""
    if boot.min() == boot.max():
        v = float(boot[0])
        return 0.0, v, v
    lo, hi = np.quantile(boot, [tail, 1.0 - tail])
    return float(boot.std(ddof=1)), float(lo), float(hi)


def interval_method(base: str, interval: IntervalKind) -> str:
    return f"{base}, {'expanded percentile' if interval == 'expanded' else 'percentile'}"


def _expanded_p(tail: float, n_clusters: int) -> float:
    """The two-sided p-value that agrees with the expanded interval: the level alpha at which
    Hesterberg's widened tail alpha'/2 = Phi(-sqrt(P/(P-1)) t(1 - alpha/2, P-1)) equals the
    bootstrap mass beyond 0 (so p < 0.05 exactly when the 95% expanded interval excludes 0)."""
    if n_clusters < 2:
        return min(1.0, 2.0 * tail)
    z = -float(_stats.norm.ppf(min(tail, 0.5)))
    t = z / math.sqrt(n_clusters / (n_clusters - 1))
    return float(min(1.0, 2.0 * _stats.t.sf(t, n_clusters - 1)))


# ---------------------------------------------------------------- means
def profile_bootstrap_mean(
    values: Values,
    profiles: Profiles,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    interval: IntervalKind = "expanded",
) -> Interval:
    """Mean over questions with a profile-bootstrap interval.

    Any per-question figure whose aggregate is a mean fits: accuracy, ROUGE, min(R, 1/R) truth
    ratios, collapse flags (0/1 -> a share). Each resample draws P profiles with replacement and
    takes all questions of each; its statistic is sum of their scores / number of their questions.
    None/NaN scores are dropped first. Zero profiles left: all-None Interval, ``n_clusters`` 0."""
    _check(resamples, level, interval)
    (x,), codes, n_profiles = _kept([_floats(values, "values")], profiles)
    method = interval_method("profile bootstrap mean", interval)
    if n_profiles == 0:
        return Interval(None, None, None, None, 0, method, level, resamples, seed)
    sums = _per_profile(x, codes, n_profiles)
    counts = np.bincount(codes, minlength=n_profiles).astype(np.float64)
    w = draw_profile_counts(np.random.default_rng(seed), n_profiles, resamples)
    boot = (w @ sums) / (w @ counts)
    se, lo, hi = _spread(boot, interval_tail(level, n_profiles, interval))
    value = float(sums.sum() / counts.sum())
    return Interval(value, se, lo, hi, n_profiles, method, level, resamples, seed)


def profile_bootstrap_of_means(
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    statistic: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    interval: IntervalKind = "expanded",
) -> Interval:
    """Any smooth function of several means over the same profiles (a claim such as "the mean
    image+text drop exceeds the mean text-only drop"), one resample of profiles shared by all.

    sums, counts: T x P arrays, the per-profile sum of scores and number of questions of T means
    (a profile without questions in a term has count 0 there). statistic: maps a B x T array of
    resampled means to B values (and the 1 x T full-sample means to the point value). Resamples
    where a term has no question are dropped (counted in ``dropped``)."""
    _check(resamples, level, interval)
    sums, counts = np.atleast_2d(np.asarray(sums, np.float64)), np.atleast_2d(np.asarray(counts, np.float64))
    if sums.shape != counts.shape:
        raise ValueError(f"sums {sums.shape} and counts {counts.shape} differ in shape")
    n_profiles = sums.shape[1]
    method = interval_method("profile bootstrap of a function of means", interval)
    totals = counts.sum(axis=1)
    if n_profiles == 0 or np.any(totals == 0):
        return Interval(None, None, None, None, n_profiles, method, level, resamples, seed)
    value = float(statistic((sums.sum(axis=1) / totals)[None, :])[0])
    w = draw_profile_counts(np.random.default_rng(seed), n_profiles, resamples)
    den = w @ counts.T  # B x T
    ok = np.all(den > 0, axis=1)
    boot = statistic((w[ok] @ sums.T) / den[ok])
    se, lo, hi = _spread(boot, interval_tail(level, n_profiles, interval))
    return Interval(value, se, lo, hi, n_profiles, method, level, resamples, seed, int(resamples - ok.sum()))


# ---------------------------------------------------------------- AUC and privleak
def _win_matrix(
    x: npt.NDArray[np.float64],
    xc: npt.NDArray[np.intp],
    n_x: int,
    y: npt.NDArray[np.float64],
    yc: npt.NDArray[np.intp],
    n_y: int,
) -> npt.NDArray[np.float64]:
    """K[p, q] = sum over member questions of profile p and non-member questions of profile q of
    [x > y] + 0.5 [x == y]. Built by sorting (O((n + m) * n_y)), never by forming all n * m pairs."""
    order = np.argsort(y, kind="stable")
    ys, yq = y[order], yc[order]
    # below[k, q] = number of the k smallest non-member scores that belong to profile q
    below = np.zeros((len(y) + 1, n_y))
    below[np.arange(1, len(y) + 1), yq] = 1.0
    np.cumsum(below, axis=0, out=below)
    lt = np.searchsorted(ys, x, side="left")
    le = np.searchsorted(ys, x, side="right")
    per_member = 0.5 * (below[lt] + below[le])  # n x n_y: wins + half ties of each member question
    by_profile = np.argsort(xc, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(xc[by_profile]) != 0])
    k = np.add.reduceat(per_member[by_profile], starts, axis=0)
    out = np.zeros((n_x, n_y))
    out[xc[by_profile][starts]] = k
    return out


def stratified_auc_bootstrap(
    members: Values,
    member_profiles: Profiles,
    nonmembers: Values,
    nonmember_profiles: Profiles,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    interval: IntervalKind = "expanded",
) -> Interval:
    """AUC = P(member score > non-member score) + 0.5 P(tie), with a two-sample profile bootstrap.

    Orientation: a higher score means "member"; the caller orients. ``privacy.auc`` takes
    loss-like scores (higher = non-member), so ``privacy.auc(m, n)`` equals this function's value
    on ``-m`` and ``-n``. Members' and non-members' profiles are resampled separately (each sample
    keeps its own number of profiles; a profile id shared by both samples is two clusters). The
    resampled AUC_b = sum_pq W[b,p] K[p,q] V[b,q] / ((W[b] . n_member) (V[b] . n_nonmember)) with K
    the per-profile-pair win matrix, so B resamples cost two matrix products. The expanded
    percentile uses the smaller of the two samples' profile counts (of those with 2 or more
    profiles), which errs wide. Either sample empty after dropping None/NaN: all-None Interval."""
    _check(resamples, level, interval)
    (x,), xc, n_x = _kept([_floats(members, "members")], member_profiles)
    (y,), yc, n_y = _kept([_floats(nonmembers, "nonmembers")], nonmember_profiles)
    method = interval_method(f"stratified profile bootstrap AUC ({n_x} member + {n_y} non-member profiles)", interval)
    if n_x == 0 or n_y == 0:
        return Interval(None, None, None, None, n_x + n_y, method, level, resamples, seed)
    k = _win_matrix(x, xc, n_x, y, yc, n_y)
    value = float(k.sum()) / (len(x) * len(y))
    rng = np.random.default_rng(seed)
    w = draw_profile_counts(rng, n_x, resamples)
    v = draw_profile_counts(rng, n_y, resamples)
    nx = np.bincount(xc, minlength=n_x).astype(np.float64)
    ny = np.bincount(yc, minlength=n_y).astype(np.float64)
    boot = np.einsum("bq,bq->b", w @ k, v) / ((w @ nx) * (v @ ny))
    varying = [n for n in (n_x, n_y) if n >= 2]
    se, lo, hi = _spread(boot, interval_tail(level, min(varying) if varying else 1, interval))
    return Interval(value, se, lo, hi, n_x + n_y, method, level, resamples, seed)


def privleak_interval(auc: Interval, auc_reference: float = 0.5) -> Interval:
    """privleak = ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) * 100 with its interval.

    AUC_ref is treated as a fixed number (its own sampling error is ignored), so privleak is a
    decreasing linear map of the AUC: the AUC interval maps onto the privleak interval with the
    ends swapped, and se scales by 100 / (1 - AUC_ref)."""
    if auc_reference >= 1.0:
        raise ValueError("privleak is undefined against a reference AUC of 1 (it recognises every member)")
    scale = 100.0 / (1.0 - auc_reference)

    def f(a: float | None) -> float | None:
        return None if a is None else (auc_reference - a) * scale

    se = None if auc.se is None else auc.se * scale
    method = f"{auc.method}; privleak against a fixed AUC_ref = {auc_reference:g}"
    return Interval(
        f(auc.value), se, f(auc.hi), f(auc.lo), auc.n_clusters, method, auc.level, auc.resamples, auc.seed, auc.dropped
    )


# ---------------------------------------------------------------- paired figures
def paired_bootstrap_difference(
    run_values: Values,
    base_values: Values,
    profiles: Profiles,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    interval: IntervalKind = "expanded",
) -> PairedDifference:
    """Mean(run) - mean(base) over the same questions, resampling profiles and taking both runs'
    answers for each drawn profile (the pairing removes the between-question variance both share).

    The lists must be aligned question by question (same qid order); a question missing in either
    run is dropped from both. Two-sided p-value from the bootstrap mass beyond 0, q = min((#{d_b <=
    0} + 1) / (B + 1), (#{d_b >= 0} + 1) / (B + 1)) (never 0): 2q for the plain percentile
    interval; for the expanded one, the level at which its widened tail equals q, so that p < 0.05
    exactly when the expanded 95% interval excludes 0 (``_expanded_p``). When every paired
    difference is exactly 0: diff 0, se 0, [0, 0], p = 1. Nothing left: all-None fields."""
    _check(resamples, level, interval)
    (run, base), codes, n_profiles = _kept([_floats(run_values, "run"), _floats(base_values, "base")], profiles)
    method = interval_method("paired profile bootstrap", interval)
    if n_profiles == 0:
        return PairedDifference(None, None, None, None, None, 0, 0, method, level, resamples, seed)
    d = _per_profile(run - base, codes, n_profiles)
    counts = np.bincount(codes, minlength=n_profiles).astype(np.float64)
    w = draw_profile_counts(np.random.default_rng(seed), n_profiles, resamples)
    boot = (w @ d) / (w @ counts)
    se, lo, hi = _spread(boot, interval_tail(level, n_profiles, interval))
    below = (int(np.count_nonzero(boot <= 0.0)) + 1) / (resamples + 1)
    above = (int(np.count_nonzero(boot >= 0.0)) + 1) / (resamples + 1)
    # A degenerate distribution (every resample the same) has the point interval: plain p agrees with it.
    expanded = interval == "expanded" and se > 0.0
    p = _expanded_p(min(below, above), n_profiles) if expanded else min(1.0, 2.0 * min(below, above))
    diff = float(d.sum() / counts.sum())
    return PairedDifference(diff, se, lo, hi, p, n_profiles, len(run), method, level, resamples, seed)


def recovery_bootstrap(
    original: Values,
    unlearned: Values,
    relearned: Values,
    profiles: Profiles,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    interval: IntervalKind = "expanded",
) -> Interval:
    """Relearn recovery (mean relearned - mean unlearned) / (mean original - mean unlearned), the
    three means over the same questions (aligned, same order; a question missing in any is dropped).

    Profiles are resampled once and all three models' answers taken together, so the ratio's
    numerator and denominator move together as they should. Resamples whose denominator is within
    1e-12 of 0 are undefined: they are dropped and counted in ``dropped``; if more than half are,
    lo, hi and se are None and ``method`` says why. A full-sample denominator of 0 gives value
    None (unlearning changed nothing, so there is nothing to recover)."""
    _check(resamples, level, interval)
    cols, codes, n_profiles = _kept(
        [_floats(original, "original"), _floats(unlearned, "unlearned"), _floats(relearned, "relearned")], profiles
    )
    orig, unl, rel = cols
    method = interval_method("profile bootstrap recovery ratio", interval)
    if n_profiles == 0:
        return Interval(None, None, None, None, 0, method, level, resamples, seed)
    num = _per_profile(rel - unl, codes, n_profiles)
    den = _per_profile(orig - unl, codes, n_profiles)
    counts = np.bincount(codes, minlength=n_profiles).astype(np.float64)
    den_mean = float(den.sum() / counts.sum())
    value = None if abs(den_mean) < DENOMINATOR_EPS else float(num.sum() / den.sum())
    w = draw_profile_counts(np.random.default_rng(seed), n_profiles, resamples)
    den_b = w @ den
    ok = np.abs(den_b / (w @ counts)) >= DENOMINATOR_EPS
    dropped = int(resamples - np.count_nonzero(ok))
    if dropped * 2 > resamples:
        method += f"; undefined: {dropped} of {resamples} resamples had mean original == mean unlearned"
        return Interval(value, None, None, None, n_profiles, method, level, resamples, seed, dropped)
    boot = (w[ok] @ num) / den_b[ok]
    se, lo, hi = _spread(boot, interval_tail(level, n_profiles, interval))
    if dropped:
        method += f"; {dropped} of {resamples} resamples with a zero denominator dropped"
    return Interval(value, se, lo, hi, n_profiles, method, level, resamples, seed, dropped)


# ---------------------------------------------------------------- seeds
@dataclass(frozen=True)
class SeedSummary:
    """One figure over training seeds: spread, a new seed's prediction interval, and an interval
    for the mean over seeds that counts both seed and question sampling (see ``summarize_seeds``)."""

    mean: float
    sd: float | None
    n: int
    values: tuple[float, ...]
    prediction_interval: tuple[float, float] | None
    se: float | None
    lo: float | None
    hi: float | None
    df: float | None
    level: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        pi = self.prediction_interval
        return {
            "mean": _plain(self.mean),
            "sd": _plain(self.sd),
            "n": int(self.n),
            "values": [_plain(v) for v in self.values],
            "prediction_interval": None if pi is None else [_plain(pi[0]), _plain(pi[1])],
            "se": _plain(self.se),
            "lo": _plain(self.lo),
            "hi": _plain(self.hi),
            "df": _plain(self.df),
            "level": float(self.level),
            "method": self.method,
        }


def summarize_seeds(
    values: Sequence[float], ses: Sequence[float] | None = None, *, level: float = LEVEL
) -> SeedSummary:
    """Summarise one figure over n seeds evaluated on the SAME questions.

    * sd: between-seed standard deviation (ddof=1).
    * prediction_interval (a new seed's score on these questions): mean +/- t(1 - a/2, n - 1) * sd
      * sqrt(1 + 1/n). With n = 3 that is about +/- 5 sd.
    * interval for the mean over seeds, as an estimate of the method's expected score on the
      question population: se^2 = sd^2 / n + mean(se_i^2), with se_i each seed's profile-bootstrap
      se. The seeds share their questions, so question sampling is common to all of them: it is
      not averaged away by more seeds and the between-seed sd does not contain it; mean(se_i^2)
      bounds its variance from above, and sd^2 also holds the seed x question part, so the sum
      errs wide. Critical value t(1 - a/2, df), df by Welch-Satterthwaite with the question part
      taken as known: df = (sd^2/n + Q)^2 / ((sd^2/n)^2 / (n - 1)), Q = mean(se_i^2); it goes from
      n - 1 when seeds dominate to the normal quantile when questions do. Without ``ses`` it is the
      t interval over seeds alone (``method`` says so), which covers only these questions.
    * n = 1: sd, prediction interval, se, lo, hi and df are None: one seed says nothing about seed
      variance (use that seed's own bootstrap Interval for its question sampling).

    Seeds' values must be finite numbers: a failed seed is the caller's to report, not to drop."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(vals)
    if n == 0:
        raise ValueError("no seed values to summarise")
    if not np.all(np.isfinite(vals)):
        raise ValueError("seed values must be finite numbers")
    if ses is not None:
        se_arr = np.asarray(ses, dtype=np.float64).reshape(-1)
        if len(se_arr) != n:
            raise ValueError(f"{len(se_arr)} standard errors for {n} seeds")
        if not np.all(np.isfinite(se_arr)) or np.any(se_arr < 0):
            raise ValueError("standard errors must be finite and non-negative")
    mean = float(vals.mean())
    kept = tuple(float(v) for v in vals)
    if n < 2:
        return SeedSummary(mean, None, 1, kept, None, None, None, None, None, level, "one seed: no seed variance")
    sd = float(vals.std(ddof=1))
    tail = 1.0 - (1.0 - level) / 2.0
    t_seed = float(_stats.t.ppf(tail, n - 1))
    pi_half = t_seed * sd * math.sqrt(1.0 + 1.0 / n)
    between = sd * sd / n
    questions = 0.0 if ses is None else float(np.mean(se_arr**2))
    se = math.sqrt(between + questions)
    if ses is None:
        df: float = n - 1
        method = f"t interval over {n} seeds (question sampling not included)"
    else:
        df = math.inf if between == 0.0 else (between + questions) ** 2 * (n - 1) / between**2
        method = f"{n} seeds + question sampling, Welch-Satterthwaite t"
    crit = float(_stats.norm.ppf(tail)) if math.isinf(df) else float(_stats.t.ppf(tail, df))
    return SeedSummary(
        mean, sd, n, kept, (mean - pi_half, mean + pi_half), se, mean - crit * se, mean + crit * se, df, level, method
    )


# ---------------------------------------------------------------- power
def design_effect(m: float, icc: float) -> float:
    """1 + (m - 1) * ICC: how much clustering (m questions per profile) inflates a mean's variance."""
    if m < 1:
        raise ValueError(f"m (questions per profile) must be at least 1, got {m}")
    if not 0.0 <= icc <= 1.0:
        raise ValueError(f"ICC must lie in [0, 1], got {icc}")
    return 1.0 + (m - 1.0) * icc


def minimum_detectable_difference(
    p: float,
    n_questions: int,
    n_profiles: int,
    *,
    icc: float,
    alpha: float = 0.05,
    power: float = 0.8,
    paired: bool = False,
    rho: float = 0.0,
) -> float:
    """Smallest true difference in a 0/1 accuracy that a two-sided test at ``alpha`` detects with
    probability ``power``: (z_{1-alpha/2} + z_power) * sqrt(2 p (1 - p) deff / n_questions), deff =
    design_effect(n_questions / n_profiles, icc). Paired (same questions, two runs): the variance
    of the difference shrinks by (1 - rho), rho the correlation of the two runs' answers; ``rho``
    is ignored when unpaired. Normal approximation, both arms of n_questions."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if n_questions < 1 or n_profiles < 1 or n_profiles > n_questions:
        raise ValueError(f"need 1 <= n_profiles <= n_questions, got {n_profiles} and {n_questions}")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError("alpha and power must lie in (0, 1)")
    if paired and not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [-1, 1], got {rho}")
    deff = design_effect(n_questions / n_profiles, icc)
    var = 2.0 * p * (1.0 - p) * deff / n_questions
    if paired:
        var *= 1.0 - rho
    z = float(_stats.norm.ppf(1.0 - alpha / 2.0)) + float(_stats.norm.ppf(power))
    return z * math.sqrt(var)


def estimate_icc(values: Values, profiles: Profiles) -> float | None:
    """Intra-profile correlation of per-question scores (0/1 or continuous), one-way ANOVA
    estimator ICC(1) for unequal group sizes: (MSB - MSW) / (MSB + (n0 - 1) MSW), n0 = (N -
    sum n_g^2 / N) / (k - 1), clipped to [0, 1] (a negative estimate is noise around 0).

    None/NaN scores are dropped. None when it cannot be estimated: fewer than 2 profiles, no
    profile with 2 or more questions, or no variance at all (every score identical)."""
    (x,), codes, k = _kept([_floats(values, "values")], profiles)
    n_total = len(x)
    if k < 2 or n_total - k < 1:
        return None
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    means = _per_profile(x, codes, k) / counts
    grand = float(x.mean())
    msb = float(np.sum(counts * (means - grand) ** 2)) / (k - 1)
    msw = float(np.sum((x - means[codes]) ** 2)) / (n_total - k)
    n0 = (n_total - float(np.sum(counts**2)) / n_total) / (k - 1)
    denom = msb + (n0 - 1.0) * msw
    if denom <= 0.0:
        return None
    return float(min(1.0, max(0.0, (msb - msw) / denom)))
