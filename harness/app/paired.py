"""Two runs compared on the same questions: the paired difference of a figure, with its interval
and p-value, for `check` and the leaderboard's significance markers.

Why paired: two runs of the same benchmark answer the same questions, and most of each figure's
sampling error (which profiles happen to be in the forget set) is common to both. Resampling
profiles and taking both runs' answers for each drawn profile
(`statistics.paired_bootstrap_difference`) removes it, so a real change is told from noise with
far fewer questions than two separate intervals would need.

A figure that is the mean of a per-question score (accuracy, ROUGE, BLEU, factuality, cloze,
truth ratio) is paired question by question from the runs' samples.jsonl. A seed aggregate
(`run --seeds`) contributes each question's mean over its seeds. A figure that is not such a mean
(a membership AUC, privleak, relearn recovery, a collapse share) or a run without per-question
records falls back to its stored intervals, unpaired: diff +/- z * sqrt(se_run^2 + se_base^2),
which errs wide because it ignores the correlation of the two runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from scipy import stats

from mmunlearn.harness.core.results import SAMPLES_FILE, SampleStore, interval_of
from mmunlearn.harness.core.statistics import RESAMPLES, paired_bootstrap_difference

Cell = tuple[str, str, str]  # (set, task, mode)


@dataclass(frozen=True)
class Difference:
    """run - baseline for one figure, with its interval and two-sided p-value (None: unknown)."""

    diff: float
    lo: float | None
    hi: float | None
    p_value: float | None
    method: str

    @property
    def significant(self) -> bool:
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)

    def text(self) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.diff:+.4f} (no interval: {self.method})"
        p = "" if self.p_value is None else f", p={self.p_value:.3g}"
        return f"{self.diff:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}]{p}"


def _run_dirs(results: dict) -> list[Path]:
    """The folders holding a run's samples: the run itself, or every seed of an aggregate."""
    here = Path(results["_path"]).parent
    seeds = results.get("seeds")
    if isinstance(seeds, dict):
        return [here / name for name in seeds.get("runs", [])]
    return [here]


def run_samples(folder: str) -> dict[Cell, dict[str, tuple[str, dict]]]:
    """cell -> qid -> (profile id, scores) of one run's samples.jsonl (excluded questions out),
    read through the run's own SampleStore; once per file version (a leaderboard pairs every
    method with vanilla)."""
    path = Path(folder) / SAMPLES_FILE
    if not path.exists():
        return {}
    st = path.stat()
    return _read_samples(str(folder), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _read_samples(folder: str, _mtime_ns: int, _size: int) -> dict[Cell, dict[str, tuple[str, dict]]]:
    out: dict[Cell, dict[str, tuple[str, dict]]] = {}
    for s in SampleStore(folder).records.values():
        if not (s.get("extra") or {}).get("excluded"):
            cell = (str(s.get("set")), str(s.get("task")), str(s.get("mode")))
            out.setdefault(cell, {})[s["qid"]] = (str(s.get("profile_id")), s.get("scores") or {})
    return out


def question_scores(results: dict, cell: Cell, metric: str) -> dict[str, tuple[str, float]] | None:
    """qid -> (profile, score) of one figure, averaged over an aggregate's seeds; None when the
    run has no per-question score for it (not a per-question mean, or no samples.jsonl)."""
    found = [run_samples(str(folder)).get(cell) for folder in _run_dirs(results)]
    per_seed = [rows for rows in found if rows]
    if not per_seed or len(per_seed) < len(found) or not any(metric in sc for _p, sc in per_seed[0].values()):
        return None
    out: dict[str, tuple[str, float]] = {}
    for qid, (profile, _scores) in per_seed[0].items():
        vals = [rows.get(qid, ("", {}))[1].get(metric) for rows in per_seed]
        nums = [float(v) for v in vals if isinstance(v, (int, float))]
        if len(nums) == len(vals):
            out[qid] = (profile, sum(nums) / len(nums))
    return out


def _is_plain_mean(scores: dict[str, tuple[str, float]], reported: float) -> bool:
    """The per-question scores average to the reported figure (else it is not a plain mean)."""
    return bool(scores) and math.isclose(sum(v for _p, v in scores.values()) / len(scores), reported, abs_tol=1e-9)


def difference(
    run: dict, base: dict, cell: Cell, metric: str, *, resamples: int = RESAMPLES, seed: int = 0
) -> Difference | None:
    """run - baseline of metrics[set][task][mode][metric]; None when either has no number."""
    set_name, task, mode = cell
    r = run["metrics"].get(set_name, {}).get(task, {}).get(mode, {}).get(metric)
    b = base["metrics"].get(set_name, {}).get(task, {}).get(mode, {}).get(metric)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (r, b)):
        return None
    rs, bs = question_scores(run, cell, metric), question_scores(base, cell, metric)
    if rs and bs and _is_plain_mean(rs, r) and _is_plain_mean(bs, b):
        common = [q for q in rs if q in bs]
        if common:
            d = paired_bootstrap_difference(
                [rs[q][1] for q in common],
                [bs[q][1] for q in common],
                [rs[q][0] for q in common],
                resamples=resamples,
                seed=seed,
            )
            if d.diff is not None:
                return Difference(d.diff, d.lo, d.hi, d.p_value, f"paired over {d.n_questions} questions")
    ri, bi = interval_of(run, set_name, task, mode, metric), interval_of(base, set_name, task, mode, metric)
    rse, bse = (ri or {}).get("se"), (bi or {}).get("se")
    if not isinstance(rse, (int, float)) or not isinstance(bse, (int, float)):
        return Difference(r - b, None, None, None, "no interval for this figure")
    se = math.hypot(rse, bse)
    diff = r - b
    if se == 0:
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0, "unpaired, both intervals of width 0")
    z = float(stats.norm.ppf(0.975))
    p = float(2 * stats.norm.sf(abs(diff) / se))
    return Difference(diff, diff - z * se, diff + z * se, p, "unpaired, from the two runs' intervals")
