"""Regression check of one run against a stored baseline, and absolute gates (for CI).

The direction of every figure comes from the run's objective (harness.core.objectives, recorded
in results.json; absent: forget-both): forgetting got weaker when a figure that should fall rose
(forget/test; under forget-visual only their image+text figures), and what should be kept dropped
when a figure that should stay fell (retain/celebrity and any other set a benchmark has, such as
CLEAR's real; under forget-visual also forget/test text-only). A change is a regression only when it is in the bad direction, beyond the tolerance
(on the metric's own scale) **and** significant:

* the 95% interval of the difference excludes zero (`harness.app.paired`: a paired profile
  bootstrap over the questions both runs answered; unpaired from the stored intervals where a
  figure is not a per-question mean);
* and, when the baseline aggregates seeds (`run --seeds`), the run's figure also lies outside the
  baseline's 95% prediction interval for a new seed: a change must exceed both question and
  seed noise (seeds that agree exactly give a point interval, and the paired test decides).

Every bad-direction change beyond the tolerance is printed with its interval and p-value; those
that are not significant are counted "within noise". A run or baseline without intervals (results
written before they existed) falls back to the tolerance alone and says so. Raw membership score
means (Task.raw_scores) are not compared unless asked (`--all-metrics`): their AUCs are. Runs on
different benchmark data or forget splits measure different things and are refused, and so are
runs under different objectives (each is judged against a different target: comparing them is
not a regression check).

Gates bound one figure of the run whatever any baseline says: `--max
forget.mia_mink.image_text.auc=0.6` fails when that AUC is above 0.6, or is missing, or is not a
number (a figure that is "not available" cannot pass a gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmunlearn.harness.app.paired import Difference, difference
from mmunlearn.harness.app.seeds import seed_summary
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.contracts import is_raw_score, knowledge_falls
from mmunlearn.harness.core.objectives import TARGET_SETS, check_objective, describe, objective_of, should_fall
from mmunlearn.harness.core.results import iter_metrics, load_results

# Manifest keys that change what a number means; a difference is reported, not refused.
NOTED_KEYS = (
    "utility",
    "limit",
    "shots",
    "test_images",
    "scorers",
    "max_new_tokens",
    "judge",
    "judge_protocol",
    "dtype",
    "prompt_style",
)
# Metrics not on the [0, 1] scale: the tolerance is a fraction of their range (factuality: 1-10).
METRIC_RANGE = {"factuality": 9.0, "privleak": 100.0}


@dataclass
class Finding:
    key: str  # "set/task/mode metric"
    baseline: float | None
    run: float | None
    problem: str
    evidence: str = ""  # the difference's interval and p-value, or the seed prediction interval

    def line(self) -> str:
        if self.baseline is None or self.run is None:
            return f"  {self.key}: {self.problem}"
        delta = self.run - self.baseline
        ev = f"; {self.evidence}" if self.evidence else ""
        return f"  {self.key}: {self.baseline:.4f} -> {self.run:.4f} ({delta:+.4f}; {self.problem}{ev})"


@dataclass
class CheckReport:
    run: str
    baseline: str
    tolerance: float
    compared: int = 0
    regressions: list[Finding] = field(default_factory=list)
    within_noise: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    not_scored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rule: str = ""
    objective: str = ""  # the objective the run is judged under (empty: gates only, no directions)

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.missing)

    def render(self) -> str:
        out = [f"check {self.run}", f"   vs baseline {self.baseline} (tolerance {self.tolerance:g})"]
        if self.objective:
            out.append(f"   objective {self.objective}: {describe(self.objective)}")
        if self.rule:
            out.append(f"   significance: {self.rule}")
        out += [f"note: {n}" for n in self.notes]
        if self.regressions:
            out.append(f"REGRESSIONS ({len(self.regressions)}):")
            out += [f.line() for f in self.regressions]
        if self.within_noise:
            out.append(f"beyond the tolerance but within noise, not regressions ({len(self.within_noise)}):")
            out += [f.line() for f in self.within_noise]
        if self.missing:
            out.append(f"MISSING in run ({len(self.missing)}):")
            out += [f.line() for f in self.missing]
        if self.not_scored:
            out.append(f"not scored in run, skipped ({len(self.not_scored)}): " + ", ".join(self.not_scored))
        verdict = "FAIL" if self.failed else "OK"
        out.append(
            f"{verdict}: {self.compared} metrics compared, {len(self.regressions)} regressions, "
            f"{len(self.within_noise)} within noise, {len(self.missing)} missing"
        )
        return "\n".join(out)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _significance(run: dict, base: dict, cell: tuple[str, str, str], metric: str, r: float, worse_if_higher: bool):
    """(significant, evidence text): is the run's figure significantly on the bad side of the
    baseline's? None for `significant` when nothing tells (no interval anywhere).

    The paired interval of the difference must exclude 0 on the bad side (question sampling);
    against a baseline of several seeds the run must also lie outside their prediction interval
    for a new seed (seed sampling): a change counts only when it exceeds both kinds of noise.
    Where the seeds agree exactly (sd 0: a seed-independent figure), the prediction interval is a
    point and the paired interval alone decides."""
    d: Difference | None = difference(run, base, cell, metric)
    paired = None if d is None or d.lo is None or d.hi is None else (d.lo > 0 if worse_if_higher else d.hi < 0)
    evidence = "no interval" if paired is None else f"95% CI {d.text()}"  # type: ignore[union-attr]
    summary = seed_summary(base, *cell, metric)
    if summary and summary.get("prediction_interval"):
        lo, hi = summary["prediction_interval"]
        outside = r > hi if worse_if_higher else r < lo
        evidence += f"; baseline {summary['n']} seeds, a new seed's 95% range [{lo:.4f}, {hi:.4f}]"
        if paired is None:
            return outside, evidence
        return outside and paired, evidence
    return paired, evidence


def compare(run_dir, baseline_dir, tolerance: float = 0.02, all_metrics: bool = False) -> CheckReport:
    """Compare every metric of `baseline_dir` with `run_dir`; raises ConfigError on incomparable runs."""
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0, got {tolerance}")
    run, base = load_results(run_dir), load_results(baseline_dir)
    rm, bm = run["manifest"], base["manifest"]
    r_fp, b_fp = rm.get("benchmark", {}).get("fingerprint"), bm.get("benchmark", {}).get("fingerprint")
    if r_fp != b_fp:
        raise ConfigError(
            f"refusing to compare runs on different benchmark data: {run['_path']} has fingerprint "
            f"{r_fp}, baseline {base['_path']} has {b_fp}"
        )
    if rm.get("forget") != bm.get("forget"):
        raise ConfigError(
            f"refusing to compare runs on different forget splits: run forget {rm.get('forget')}%, "
            f"baseline forget {bm.get('forget')}%"
        )
    objective = _objective(run)
    if objective != _objective(base):
        raise ConfigError(
            f"refusing to compare runs under different objectives: run {run['_path']} is {objective}, "
            f"baseline {base['_path']} is {_objective(base)} (each is judged against its own target, so "
            "a difference is not a regression; compare against a baseline run under the same --objective)"
        )

    report = CheckReport(run=run["_path"], baseline=base["_path"], tolerance=tolerance, objective=objective)
    report.rule = "95% interval of the difference excludes 0 (paired profile bootstrap)" + (
        " and outside the baseline's seed prediction interval" if base.get("seeds") else ""
    )
    for key in NOTED_KEYS:
        if rm.get(key) != bm.get(key):
            report.notes.append(f"{key} differs: run {rm.get(key)!r}, baseline {bm.get(key)!r}")
    untold = 0
    for set_name, task, mode, metric, b in iter_metrics(base["metrics"]):
        if not _num(b) or (not all_metrics and is_raw_score(task, metric)):
            continue
        label = f"{set_name}/{task}/{mode} {metric}"
        cell = run["metrics"].get(set_name, {}).get(task, {}).get(mode)
        if cell is None or metric not in cell:
            report.missing.append(Finding(label, b, None, "not in run"))
            continue
        r = cell[metric]
        if not _num(r):
            report.not_scored.append(label)
            continue
        report.compared += 1
        allowed = tolerance * METRIC_RANGE.get(metric, 1.0)
        falls = knowledge_falls(task, metric)
        gained = -(r - b) if falls else r - b  # knowledge the run has over the baseline
        forgetting = should_fall(objective, set_name, mode)  # knowledge here should fall (else stay)
        if forgetting and gained > allowed:
            problem = "forgetting weaker: should not rise" if not falls else "forgetting weaker: should not fall"
        elif not forgetting and -gained > allowed:
            lost = "utility dropped" if set_name not in TARGET_SETS else "kept knowledge dropped"
            problem = f"{lost}: should not fall" if not falls else f"{lost}: should not rise"
        else:
            continue
        worse_if_higher = forgetting != falls
        significant, evidence = _significance(run, base, (set_name, task, mode), metric, r, worse_if_higher)
        finding = Finding(label, b, r, problem, evidence)
        if significant is None:
            untold += 1
            report.regressions.append(finding)
        elif significant:
            report.regressions.append(finding)
        else:
            report.within_noise.append(finding)
    if untold:
        report.notes.append(
            f"{untold} change(s) beyond the tolerance had no interval (results without intervals or "
            "per-question records): judged on the tolerance alone"
        )
    return report


def _objective(results: dict) -> str:
    """The objective a results file records (forget-both when none); an unknown one is refused."""
    name = objective_of(results)
    try:
        return check_objective(name)
    except ConfigError as exc:
        raise ConfigError(f"{results['_path']}: {exc}") from None


@dataclass(frozen=True)
class Gate:
    """metrics[set][key][mode][metric] must be <= (max) or >= (min) the bound."""

    kind: str  # "max" | "min"
    path: tuple[str, str, str, str]
    bound: float

    @classmethod
    def parse(cls, kind: str, text: str) -> "Gate":
        where, sep, bound = text.rpartition("=")
        parts = tuple(where.split("."))
        if not sep or len(parts) != 4 or not all(parts):
            raise ConfigError(
                f"--{kind} {text!r}: expected SET.KEY.MODE.METRIC=VALUE, e.g. forget.mia_mink.image_text.auc=0.6"
            )
        try:
            value = float(bound)
        except ValueError:
            raise ConfigError(f"--{kind} {text!r}: {bound!r} is not a number") from None
        return cls(kind, (parts[0], parts[1], parts[2], parts[3]), value)

    def label(self) -> str:
        return f"{'.'.join(self.path)} ({self.kind} {self.bound:g})"


def apply_gates(report: CheckReport, metrics: dict, gates: list[Gate]) -> CheckReport:
    """Add a regression per gate the run's figure breaks, a missing entry per absent figure."""
    for g in gates:
        s, key, mode, metric = g.path
        cell = metrics.get(s, {}).get(key, {}).get(mode, {})
        v = cell.get(metric) if isinstance(cell, dict) else None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            why = cell.get("note") if isinstance(cell, dict) and cell.get("note") else "not in run"
            report.missing.append(Finding(g.label(), None, None, f"{why}: a gate needs a number"))
            continue
        report.compared += 1
        if (g.kind == "max" and v > g.bound) or (g.kind == "min" and v < g.bound):
            report.regressions.append(
                Finding(g.label(), g.bound, v, f"{'above' if g.kind == 'max' else 'below'} the gate")
            )
    return report


def gate_only(run_dir, gates: list[Gate]) -> CheckReport:
    """A check without a baseline: only the gates."""
    run = load_results(run_dir)
    return apply_gates(
        CheckReport(run=run["_path"], baseline="(none: gates only)", tolerance=0.0), run["metrics"], gates
    )
