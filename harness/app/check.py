"""Regression check of one run against a stored baseline, and absolute gates (for CI).

Forgetting got weaker when a forget/test metric rose; utility dropped when a retain/celebrity
metric fell. Either beyond the tolerance is a regression. Runs on different benchmark data or
forget splits measure different things and are refused rather than compared.

Gates bound one figure of the run whatever any baseline says: `--max
forget.mia_mink.image_text.auc=0.6` fails when that AUC is above 0.6, or is missing, or is not a
number (a figure that is "not available" cannot pass a gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.contracts import knowledge_falls
from mmunlearn.harness.core.results import HIGHER_IS_BETTER_SETS, LOWER_IS_BETTER_SETS, iter_metrics, load_results

# Manifest keys that change what a number means; a difference is reported, not refused.
NOTED_KEYS = (
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

    def line(self) -> str:
        if self.baseline is None or self.run is None:
            return f"  {self.key}: {self.problem}"
        delta = self.run - self.baseline
        return f"  {self.key}: {self.baseline:.4f} -> {self.run:.4f} ({delta:+.4f}; {self.problem})"


@dataclass
class CheckReport:
    run: str
    baseline: str
    tolerance: float
    compared: int = 0
    regressions: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    not_scored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.missing)

    def render(self) -> str:
        out = [f"check {self.run}", f"   vs baseline {self.baseline} (tolerance {self.tolerance:g})"]
        out += [f"note: {n}" for n in self.notes]
        if self.regressions:
            out.append(f"REGRESSIONS ({len(self.regressions)}):")
            out += [f.line() for f in self.regressions]
        if self.missing:
            out.append(f"MISSING in run ({len(self.missing)}):")
            out += [f.line() for f in self.missing]
        if self.not_scored:
            out.append(f"not scored in run, skipped ({len(self.not_scored)}): " + ", ".join(self.not_scored))
        verdict = "FAIL" if self.failed else "OK"
        out.append(
            f"{verdict}: {self.compared} metrics compared, {len(self.regressions)} regressions, "
            f"{len(self.missing)} missing"
        )
        return "\n".join(out)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(run_dir, baseline_dir, tolerance: float = 0.02) -> CheckReport:
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

    report = CheckReport(run=run["_path"], baseline=base["_path"], tolerance=tolerance)
    for key in NOTED_KEYS:
        if rm.get(key) != bm.get(key):
            report.notes.append(f"{key} differs: run {rm.get(key)!r}, baseline {bm.get(key)!r}")

    for set_name, task, mode, metric, b in iter_metrics(base["metrics"]):
        if not _num(b):
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
        gained = -(r - b) if knowledge_falls(task, metric) else r - b  # knowledge the run has over the baseline
        if set_name in LOWER_IS_BETTER_SETS and gained > allowed:
            report.regressions.append(Finding(label, b, r, "forgetting weaker: should not rise"))
        elif set_name in HIGHER_IS_BETTER_SETS and -gained > allowed:
            report.regressions.append(Finding(label, b, r, "utility dropped: should not fall"))
    return report


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
