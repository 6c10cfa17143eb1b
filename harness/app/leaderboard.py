"""Leaderboard: many runs' results.json -> Markdown / CSV / HTML tables and PNG plots.

Rows are methods (name with the parameters that differ from the method's defaults), columns are
set x task x mode for each task's headline metric, so every number is shown for image+text and
text-only inputs; a second table gives the modality gap. Plots follow the MANU paper: grouped
bars per set and task (Figure 4: change vs vanilla on forget/test, absolute on retain/celebrity)
and the forgetting/utility trade-off scatter (Figure 5), per mode.

Directions (what "better" means in a column) come from each row's objective
(harness.core.objectives, recorded in its results.json; absent: forget-both), per set and mode:
the best/worst marks, the † of a significant drop, the section titles' "lower/higher is better",
the change-vs-vanilla bar panels and the trade-off scatter all read should_fall. Each row is judged
under its own objective (an external run too); where the rows' objectives differ, the tables get
an `objective` column and best/worst are marked among the rows that share the column's direction.
"""

from __future__ import annotations

import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mmunlearn.harness.app.paired import difference
from mmunlearn.harness.core.contracts import (
    get_method,
    get_task,
    is_raw_score,
    knowledge_falls,
    param_defaults,
    registered_tasks,
)
from mmunlearn.harness.core.stages import Column, get_stage, registered_stages
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.objectives import (
    DEFAULT_OBJECTIVE,
    OBJECTIVES,
    check_objective,
    objective_of,
    should_fall,
)
from mmunlearn.harness.core.records import MODES, SETS
from mmunlearn.harness.core.results import (
    atomic_file,
    atomic_write_text,
    interval_bounds,
    load_results,
)


def task_headlines() -> dict[str, tuple[str, ...]]:
    """Each registered task's leaderboard metrics (its `headline`; the first ranks), in registry
    order: the columns come from the task plugins, not from constants here. A metric only
    appears when some run has a number for it (factuality needs a judge)."""
    return {t: get_task(t).headline_metrics() for t in registered_tasks()}


MODE_SHORT = {"image_text": "img+txt", "text_only": "txt"}
SET_TITLES = {
    "forget": "Forget set",
    "test": "Test set (transformed forget profiles)",
    "retain": "Retain set",
    "celebrity": "Real celebrity set",
}
LEGEND = (
    "Best value per column in **bold**, worst in *italics* (among unlearning methods; vanilla is the "
    "reference and is not marked). On forget and test **lower is better** (knowledge forgotten); on "
    "retain and celebrity **higher is better** (utility kept). Each value is followed by the half-width "
    "of its 95% interval (profile bootstrap; for a row of several seeds, seeds and questions together). "
    "† on forget and test: the drop against vanilla is significant (paired profile bootstrap over the "
    "same questions, 95% interval of the difference below 0; significant is not large: read the size "
    "beside it). Raw membership score means carry no mark."
)
SIGNIFICANT = "†"
REFERENCE = "vanilla"
# LEGEND's direction sentences, replaced where the board's objectives give other directions
LEGEND_DIRECTIONS = (
    "On forget and test **lower is better** (knowledge forgotten); on "
    "retain and celebrity **higher is better** (utility kept)."
)
LEGEND_DAGGER = "† on forget and test: the drop against vanilla is significant"
LEGEND_MARKED = "(among unlearning methods; vanilla"
HTML_DIRECTIONS = "On forget and test lower is better; on retain and celebrity higher is better."


@dataclass
class Run:
    label: str
    method: str
    params: dict
    seed: int | None
    path: str
    metrics: dict
    gap: dict
    manifest: dict
    source: str = ""  # the result root it was found under (marked when a leaderboard has several)
    results: dict = field(default_factory=dict)  # the whole results.json (intervals, seeds)
    # column -> whether its drop against vanilla is significant: bootstrapped once per build,
    # read by both the Markdown and the HTML table
    drops: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_seeds(self) -> int:
        """Seeds this row aggregates (`run --seeds`): 1 for a single run."""
        return len((self.results.get("seeds") or {}).get("seeds") or [None])

    @property
    def name(self) -> str | None:
        """The label the run was given (`run --name`), for an external checkpoint."""
        return (self.manifest.get("model") or {}).get("name")

    @property
    def is_reference(self) -> bool:
        """The vanilla row of the base model: unnamed, nothing applied."""
        return self.method == REFERENCE and not self.name

    @property
    def objective(self) -> str:
        """What the run was trying to do (harness.core.objectives; forget-both when unrecorded)."""
        return objective_of({"manifest": self.manifest})

    def falls(self, s: str, m: str) -> bool:
        """Whether knowledge on (set, mode) should fall under this row's objective."""
        return should_fall(self.objective, s, m)


# ---------------------------------------------------------------- loading
def _defaults_of(method: str) -> dict | None:
    """Default parameter values from the method's Params dataclass; None if it is not registered here."""
    try:
        cls = get_method(method)
    except Exception:  # unknown here (results from elsewhere): show every parameter
        return None
    return json.loads(json.dumps(param_defaults(cls), default=str))


def _fmt_param(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_param(x) for x in v) + "]"
    return str(v)


def method_label(method: str, params: dict) -> str:
    """'ga (lr=1e-4, epochs=2)': the method name plus the parameters that differ from its defaults."""
    defaults = _defaults_of(method)
    shown = {k: v for k, v in (params or {}).items() if defaults is None or defaults.get(k, object()) != v}
    if not shown:
        return method
    return f"{method} (" + ", ".join(f"{k}={_fmt_param(v)}" for k, v in shown.items()) + ")"


def selection_label(manifest: dict) -> str:
    """' [best checkpoint: step 24]' for a run whose output is the sweep's choice (--select best)."""
    selected = ((manifest.get("stages") or {}).get("sweep") or {}).get("selected")
    if not selected:
        return ""
    step = selected.get("step")
    return f" [best checkpoint: step {step}]" if step is not None else " [best checkpoint: none, final kept]"


def find_runs(paths) -> list[tuple[str, str]]:
    """(root, run) for every run under the given paths. A path is a run (a results.json or the
    folder holding one; its root is its parent folder) or a result root: every run below it,
    e.g. the committed `results/demo` and a user's `runs/`."""
    found = []
    for p in paths:
        path = Path(p)
        if path.is_file() or (path / "results.json").is_file():
            run = path.parent if path.is_file() else path
            found.append((str(run.parent), str(path)))
            continue
        if not path.is_dir():
            raise ConfigError(f"{p}: no such run directory or result root")
        below = sorted(f.parent for f in path.rglob("results.json"))
        if not below:
            raise ConfigError(f"{p}: no results.json below it (not a run directory or a result root)")
        found += [(str(p), str(run)) for run in below if not _is_seed_of_aggregate(run)]
    return found


def _is_seed_of_aggregate(run: Path) -> bool:
    """A seed folder of a `run --seeds` aggregate: its row is the aggregate's."""
    above = run.parent / "results.json"
    if not above.is_file():
        return False
    try:
        seeds = load_results(run.parent).get("seeds") or {}
    except ConfigError:
        return False
    return run.name in (seeds.get("runs") or [])


def load_runs(paths) -> list[Run]:
    """Load results of several runs and result roots; refuses a mix of benchmarks or forget
    splits (not comparable)."""
    if not paths:
        raise ConfigError("no run directories given")
    runs = []
    for root, p in find_runs(paths):
        res = load_results(p)
        man = res["manifest"]
        method = man.get("method", {})
        runs.append(
            Run(
                label="",
                method=method.get("name", "?"),
                params=method.get("params") or {},
                seed=man.get("seed"),
                path=os.path.dirname(res["_path"]) or ".",
                metrics=res["metrics"],
                gap=res.get("modality_gap", {}),
                manifest=man,
                source=root,
                results=res,
            )
        )
    keys = {(r.manifest.get("benchmark", {}).get("fingerprint"), r.manifest.get("forget")) for r in runs}
    if len(keys) > 1:
        detail = "; ".join(
            f"{r.path}: forget {r.manifest.get('forget')}, benchmark "
            f"{str(r.manifest.get('benchmark', {}).get('fingerprint'))[:12]}"
            for r in runs
        )
        raise ConfigError(f"runs on different benchmarks or forget splits cannot share a leaderboard: {detail}")
    for r in runs:
        try:
            check_objective(r.objective)
        except ConfigError as exc:
            raise ConfigError(f"{r.path}: {exc}") from None
        r.label = (r.name or method_label(r.method, r.params)) + selection_label(r.manifest)
    _dedupe_labels(runs)
    runs.sort(key=lambda r: (not r.is_reference, r.label))
    return runs


def _dedupe_labels(runs: list[Run]) -> None:
    """Rows with the same label get what tells them apart: the root, the seed or the folder."""
    by_label: dict[str, list[Run]] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r)
    for label, group in by_label.items():
        if len(group) < 2:
            continue
        for key in (lambda r: r.source, lambda r: f"seed={r.seed}", lambda r: Path(r.path).name, lambda r: r.path):
            if len({key(r) for r in group}) == len(group):
                break
        for r in group:
            r.label = f"{label} [{key(r)}]"


def several_sources(runs: list[Run]) -> bool:
    return len({r.source for r in runs}) > 1


def objectives(runs: list[Run]) -> list[str]:
    """The objectives the board judges: those of its unlearning rows (vanilla is the reference,
    whatever it recorded), or of every row when there is none; known ones in OBJECTIVES order."""
    judged = [r for r in runs if not r.is_reference] or runs
    found = {r.objective for r in judged} or {DEFAULT_OBJECTIVE}
    return sorted(found, key=lambda o: (OBJECTIVES.index(o) if o in OBJECTIVES else len(OBJECTIVES), o))


def several_objectives(runs: list[Run]) -> bool:
    """Whether rows are judged under different objectives (the tables then show each row's)."""
    return len(objectives(runs)) > 1


def records_objective(runs: list[Run]) -> bool:
    """Whether some run recorded its objective (the CSV then has an `objective` column; results
    written before objectives existed keep their CSV as it was)."""
    return any("objective" in r.manifest for r in runs)


def _falling(objs: list[str]) -> dict[tuple[str, str], set[bool]]:
    """(set, mode) -> the directions the given objectives give it (True: should fall)."""
    return {(s, m): {should_fall(o, s, m) for o in objs} for s in SETS for m in MODES}


def _is_classic(objs: list[str]) -> bool:
    """Whether the objectives' directions are the classic ones (forget/test fall in both modes,
    retain/celebrity stay), which the fixed legend sentences state."""
    return _falling(objs) == _falling([DEFAULT_OBJECTIVE])


def _better(fall: bool) -> str:
    return "lower is better" if fall else "higher is better"


def set_direction(objs: list[str], s: str) -> str:
    """A set's direction for its section title: "lower is better" where every mode and objective
    agree, else per mode ("img+txt: lower is better; txt: higher is better"), naming the
    objective where they differ on a mode."""
    dirs = {(s, m): {should_fall(o, s, m) for o in objs} for m in MODES}
    if len(set().union(*(dirs[s, m] for m in MODES))) == 1:
        return _better(next(iter(dirs[s, MODES[0]])))
    parts = []
    for m in MODES:
        if len(dirs[s, m]) == 1:
            parts.append(f"{MODE_SHORT[m]}: {_better(next(iter(dirs[s, m])))}")
        else:
            parts.append(f"{MODE_SHORT[m]}: " + ", ".join(f"{_better(should_fall(o, s, m))} under {o}" for o in objs))
    return "; ".join(parts)


def _cells_text(o: str, fall: bool, sets=SETS) -> str:
    """'forget and test img+txt' / 'forget and test txt, retain and celebrity': the (set, mode)
    cells of `sets` whose direction under `o` is `fall`, sets with the same modes grouped."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for s in sets:
        modes = tuple(m for m in MODES if should_fall(o, s, m) == fall)
        if modes:
            groups.setdefault(modes, []).append(s)
    return ", ".join(
        " and ".join(names) + ("" if len(modes) == len(MODES) else " " + "/".join(MODE_SHORT[m] for m in modes))
        for modes, names in groups.items()
    )


def direction_sentence(objs: list[str], bold: bool = True, sets=SETS) -> str:
    """What lower/higher means on the board's `sets`, per objective (for the legend)."""
    b = (lambda x: f"**{x}**") if bold else (lambda x: x)
    per = []
    for o in objs:
        down, up = _cells_text(o, True, sets), _cells_text(o, False, sets)
        parts = ([f"{b('lower is better')} on {down} (knowledge forgotten)"] if down else []) + (
            [f"{b('higher is better')} on {up} (knowledge kept)"] if up else []
        )
        per.append(f"Under {o}: " + "; ".join(parts) + ".")
    which = "each row's objective (column `objective`)" if len(objs) > 1 else "the runs' objective"
    return f"Directions follow {which}. " + " ".join(per)


def _states_directions(runs: list[Run]) -> bool:
    """Whether LEGEND's fixed direction sentences describe the board: MLLMU-Bench's sets only,
    under the classic directions."""
    return _is_classic(objectives(runs)) and set(board_sets(runs)) <= set(SETS)


def legend(runs: list[Run]) -> str:
    """LEGEND, with its direction sentences restated where the board's objectives differ from the
    classic directions (forget-visual keeps forget/test text-only) or its sets are another
    benchmark's (CLEAR: forget, retain, real)."""
    objs = objectives(runs)
    if _states_directions(runs):
        return LEGEND
    text = LEGEND.replace(LEGEND_DIRECTIONS, direction_sentence(objs, sets=board_sets(runs))).replace(
        LEGEND_DAGGER, "† where the row's objective says knowledge should fall: the drop against vanilla is significant"
    )
    if len(objs) > 1:
        text = text.replace(LEGEND_MARKED, "(among unlearning methods judged in the same direction; vanilla")
    return text


def find_row(paths, row: str) -> Run:
    """The run labelled `row` among the runs under `paths` (as the leaderboard labels them)."""
    runs = load_runs(paths)
    hits = [r for r in runs if r.label == row]
    if len(hits) != 1:
        labels = ", ".join(repr(r.label) for r in runs)
        raise ConfigError(f"no row {row!r} under {', '.join(map(str, paths))}; rows: {labels}")
    return hits[0]


# ---------------------------------------------------------------- tables
def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def set_title(s: str) -> str:
    """A set's section title: the built-in ones, else the title its benchmark plugin gives it."""
    from mmunlearn.harness.core.bench import BENCHMARK_REGISTRY, registered_benchmarks

    registered_benchmarks()
    plugin_titles = {k: v for cls in BENCHMARK_REGISTRY.values() for k, v in cls.titles.items()}
    return SET_TITLES.get(s) or plugin_titles.get(s) or f"Set {s}"


def utility_sets(runs: list[Run]) -> list[str]:
    """The board's sets that belong to utility suites (their plugins say so)."""
    from mmunlearn.harness.core.bench import BENCHMARK_REGISTRY, registered_benchmarks

    registered_benchmarks()
    suite_sets = {s for cls in BENCHMARK_REGISTRY.values() if cls.utility for s in cls.sets()}
    return [s for s in board_sets(runs) if s in suite_sets]


def utility_measures(runs: list[Run]) -> list[tuple[str, str, str, str]]:
    """Figure 5's utility axes, (set, task, metric, mode): retain and celebrity (the first
    headline figure of the forget measure's task, per mode) and each utility suite's headline
    figure, where the runs have one."""
    cols = headline_columns(runs)
    forget = forget_measure(runs)
    out = []
    if forget is not None:
        out += [c for c in cols if c[0] in ("retain", "celebrity") and c[1] == forget[0] and c[2] == forget[1]]
    for s in utility_sets(runs):
        first = next((c for c in cols if c[0] == s), None)
        if first is not None:
            out.append(first)
    return out


def forget_measure(runs: list[Run]) -> tuple[str, str] | None:
    """(task, metric) of Figure 5's x axis: the headline figure on which vanilla knows its forget set
    best (image+text; the first such), so the drop is readable."""
    vanilla = next((r for r in runs if r.is_reference), None)
    if vanilla is None:
        return None
    best = None
    for s, t, metric, m in headline_columns(runs):
        if s != "forget" or m != "image_text" or is_raw_score(t, metric) or knowledge_falls(t, metric):
            continue
        v = value(vanilla, (s, t, metric, m))
        if isinstance(v, (int, float)) and (best is None or v > best[0]):
            best = (float(v), t, metric)
    return None if best is None else (best[1], best[2])


def utility_kept_section(runs: list[Run]) -> list[str]:
    """Utility kept: each utility measure of a method divided by vanilla's (1.0 = all kept)."""
    vanilla = next((r for r in runs if r.is_reference), None)
    cols = [c for c in utility_measures(runs) if c[0] in utility_sets(runs)]
    if vanilla is None or not cols:
        return []
    header = ["method"] + [f"{s} {t} {metric}" for s, t, metric, _m in cols]
    lines = ["## Utility kept (method / vanilla, 1.0 = all kept)", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for r in runs:
        if r.is_reference:
            continue
        cells = [r.label]
        for c in cols:
            v, b = value(r, c), value(vanilla, c)
            cells.append(f"{v / b:.2f}" if isinstance(v, (int, float)) and isinstance(b, (int, float)) and b else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def board_sets(runs: list[Run]) -> list[str]:
    """The sets on the board: MLLMU-Bench's four in their order, then any other benchmark's sets
    (CLEAR's `real`) in the order the runs report them."""
    found = list(dict.fromkeys(s for r in runs for s in r.metrics))
    return [s for s in SETS if s in found] + [s for s in found if s not in SETS]


def headline_columns(runs: list[Run]) -> list[tuple[str, str, str, str]]:
    """(set, task, metric, mode) columns present in at least one run with a number."""
    cols = []
    headlines = task_headlines()
    for s in board_sets(runs):
        for t in headlines:
            for metric in headlines[t]:
                for m in MODES:
                    if any(_num(r.metrics.get(s, {}).get(t, {}).get(m, {}).get(metric)) for r in runs):
                        cols.append((s, t, metric, m))
    return cols


def value(run: Run, col) -> float | None:
    s, t, metric, m = col
    v = run.metrics.get(s, {}).get(t, {}).get(m, {}).get(metric)
    return v if _num(v) else None


def bounds(run: Run, s: str, key: str, metric: str, m: str) -> tuple[float, float] | None:
    """The 95% interval stored beside a figure (results.json "intervals"), or None."""
    return interval_bounds(run.results, s, key, m, metric)


def with_halfwidth(v: float | None, b: tuple[float, float] | None) -> str:
    """'0.315 ±0.120': the value and the half-width of its interval (the interval may be skewed:
    the CSV has both ends)."""
    text = fmt(v)
    return text if v is None or b is None else f"{text} ±{(b[1] - b[0]) / 2:.3f}"


def drop_is_significant(run: Run, vanilla: Run | None, col) -> bool:
    """Whether the run knows significantly less than vanilla in a column whose knowledge should
    fall under the run's objective (paired profile bootstrap over the questions both answered;
    seeds averaged per question)."""
    if col not in run.drops:
        run.drops[col] = _drop_is_significant(run, vanilla, col)
    return run.drops[col]


def _drop_is_significant(run: Run, vanilla: Run | None, col) -> bool:
    s, t, metric, m = col
    if vanilla is None or run is vanilla or not run.falls(s, m) or is_raw_score(t, metric):
        return False  # raw membership score means have no scale a drop is read on (their AUCs do)
    if not run.results or not vanilla.results:
        return False
    d = difference(run.results, vanilla.results, (s, t, m), metric)
    if d is None or not d.significant:
        return False
    return (d.diff > 0) if knowledge_falls(t, metric) else (d.diff < 0)


def seed_spread(run: Run, s: str, key: str, metric: str, m: str) -> str:
    """'0.523 ± 0.190 (3)': mean ± between-seed sd over a row's seeds."""
    from mmunlearn.harness.app.seeds import seed_summary

    summary = seed_summary(run.results, s, key, m, metric)
    if not summary or summary.get("sd") is None:
        return "–"
    return f"{summary['mean']:.3f} ± {summary['sd']:.3f} ({summary['n']})"


def gap_value(run: Run, s: str, t: str, metric: str) -> float | None:
    v = run.gap.get(s, {}).get(t, {}).get(metric)
    return v if _num(v) else None


def lower_is_better(run: Run, col) -> bool:
    """Whether a lower value is better in this column for this row: its knowledge should fall
    under the row's objective, read through the metric's own direction."""
    return run.falls(col[0], col[3]) != knowledge_falls(col[1], col[2])


def marks(runs: list[Run], col) -> dict[str, str]:
    """label -> "best" | "worst" for one column, each row judged by its objective's direction
    (lower is better where knowledge should fall); rows in different directions are marked apart."""
    by_direction: dict[bool, list[Run]] = {}
    for r in runs:
        if not r.is_reference:
            by_direction.setdefault(lower_is_better(r, col), []).append(r)
    out: dict[str, str] = {}
    for lower, candidates in by_direction.items():
        vals = {r.label: v for r in candidates if (v := value(r, col)) is not None}
        if len(vals) < 2 or len(set(vals.values())) < 2:
            continue
        best = min(vals.values()) if lower else max(vals.values())
        worst = max(vals.values()) if lower else min(vals.values())
        out.update({label: ("best" if v == best else "worst") for label, v in vals.items() if v in (best, worst)})
    return out


def fmt(v: float | None, metric: str = "") -> str:
    return "–" if v is None else f"{v:.3f}"


def fmt_gap(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3f}"


def set_sections(runs: list[Run]):
    """Per set with numbers: (title with its direction, its headline columns, best/worst marks).

    One source for the Markdown and HTML renderers, so the two tables never disagree.
    """
    cols = headline_columns(runs)
    objs = objectives(runs)
    for s in board_sets(runs):
        scols = [c for c in cols if c[0] == s]
        if scols:
            title = set_title(s)
            yield f"{title} ({set_direction(objs, s)})", scols, {c: marks(runs, c) for c in scols}


def headline_cells(runs: list[Run], scols) -> dict[tuple[str, tuple], str]:
    """(label, column) -> the cell text: value ±half-width, and † where the drop against vanilla
    is significant in a column whose knowledge should fall under the row's objective. One source
    for the Markdown and HTML tables."""
    vanilla = next((r for r in runs if r.is_reference), None)
    out = {}
    for r in runs:
        for c in scols:
            v = value(r, c)
            text = with_halfwidth(v, bounds(r, c[0], c[1], c[2], c[3]))
            out[r.label, c] = text + (SIGNIFICANT if v is not None and drop_is_significant(r, vanilla, c) else "")
    return out


def several_seeds(runs: list[Run]) -> bool:
    return any(r.n_seeds > 1 for r in runs)


def stage_value(run: Run, col: Column, mode: str) -> float | None:
    v = run.metrics.get(col.set, {}).get(col.key, {}).get(mode, {}).get(col.metric)
    return v if _num(v) else None


def stage_text(run: Run, col: Column, mode: str) -> str:
    """A stage cell as shown: counts as integers; a None figure as "–" where the run noted why
    (not available, not defined), else as the column's `empty` text."""
    v = stage_value(run, col, mode)
    if v is not None:
        return str(v) if isinstance(v, int) else with_halfwidth(v, bounds(run, col.set, col.key, col.metric, mode))
    cell = run.metrics.get(col.set, {}).get(col.key, {}).get(mode)
    return col.empty if isinstance(cell, dict) and col.metric in cell and not cell.get("note") else "–"


def _has_cell(run: Run, col: Column, mode: str) -> bool:
    """Whether the run reports this figure, a number or a None with its reason (shown as –)."""
    cell = run.metrics.get(col.set, {}).get(col.key, {}).get(mode)
    return isinstance(cell, dict) and col.metric in cell


def stage_sections(runs: list[Run]):
    """Per registered stage that some run reports: (stage, [(column, mode)], marks), where
    the best value is the one closest to the column's ideal (a stage's figures have no single
    direction: an AUC of 0.5 is ideal, below it is over-unlearning)."""
    for name in registered_stages():
        stage = get_stage(name)
        cols = [(c, m) for c in stage.columns for m in MODES if any(_has_cell(r, c, m) for r in runs)]
        if not cols:
            continue
        col_marks: dict[tuple[Column, str], dict[str, str]] = {}
        for c, m in cols:
            vals = {r.label: v for r in runs if not r.is_reference and (v := stage_value(r, c, m)) is not None}
            if c.ideal is None or len(vals) < 2 or len(set(vals.values())) < 2:
                col_marks[c, m] = {}
                continue
            dist = {label: abs(v - c.ideal) for label, v in vals.items()}
            best, worst = min(dist.values()), max(dist.values())
            col_marks[c, m] = {
                label: ("best" if d == best else "worst") for label, d in dist.items() if d in (best, worst)
            }
        yield stage, cols, col_marks


def stage_tables(stage, scols: list) -> list[tuple[str | None, list]]:
    """A stage's leaderboard tables: (sub-title or None, its (column, mode) pairs); one per key
    when the stage asks for it, headed by the key, whose columns then drop it."""
    if not stage.table_per_key:
        return [(None, scols)]
    keys = list(dict.fromkeys(c.key for c, _m in scols))
    return [(k, [(c, m) for c, m in scols if c.key == k]) for k in keys]


def _stage_header(c: Column, m: str, sub: str | None) -> str:
    return f"{c.metric} ({MODE_SHORT[m]})" if sub else f"{c.key} {c.metric} ({MODE_SHORT[m]})"


def _stage_note(runs: list[Run], stage) -> str | None:
    """A stage's "not available" reasons, as the runs recorded them."""
    notes = sorted(
        {
            str(cell["note"])
            for r in runs
            for c in stage.columns
            for cell in r.metrics.get(c.set, {}).get(c.key, {}).values()
            if isinstance(cell, dict) and cell.get("note")
        }
    )
    return "; ".join(notes) or None


def frame(runs: list[Run]):
    """Wide pandas DataFrame: one row per run, flat columns 'set/task/metric/mode'."""
    import pandas as pd

    cols = headline_columns(runs)
    rows = []
    for r in runs:
        row: dict[str, str | int | float | None] = {
            "method": r.label,
            "name": r.method,
            "params": json.dumps(r.params, sort_keys=True),
            "seed": r.seed,
            "source": r.source,
            "model": (r.manifest.get("model") or {}).get("source"),
            "run": r.path,
        }
        row["n_seeds"] = r.n_seeds
        if records_objective(runs):
            row["objective"] = r.objective
        for c in cols:
            b = bounds(r, *c[:3], c[3])
            row.update(
                {"/".join(c): value(r, c), "/".join(c) + "/lower": b and b[0], "/".join(c) + "/upper": b and b[1]}
            )
        for _stage, scols, _marks in stage_sections(runs):
            for c, m in scols:
                b = bounds(r, c.set, c.key, c.metric, m)
                name = f"{c.set}/{c.key}/{c.metric}/{m}"
                row.update({name: stage_value(r, c, m), name + "/lower": b and b[0], name + "/upper": b and b[1]})
        rows.append(row)
    return pd.DataFrame(rows)


def gap_frame(runs: list[Run]):
    import pandas as pd

    keys = sorted(
        {(s, t, metric) for (s, t, metric, _m) in headline_columns(runs)},
        key=lambda k: (board_sets(runs).index(k[0]), list(task_headlines()).index(k[1]), k[2]),
    )
    rows = [{"method": r.label, **{"/".join(k): gap_value(r, *k) for k in keys}} for r in runs]
    return pd.DataFrame(rows), keys


def _sources_note(runs: list[Run]) -> list[str]:
    if not several_sources(runs):
        return []
    roots = sorted({r.source for r in runs})
    return [f"Rows from {len(roots)} result roots: " + ", ".join(f"`{x}`" for x in roots) + " (column `from`).", ""]


def _row_head(r: Run, sources: bool) -> list[str]:
    return [r.label, f"`{r.source}`"] if sources else [r.label]


def _objective_cell(r: Run) -> str:
    """A row's objective as the tables show it (the reference is judged under none)."""
    return "–" if r.is_reference else r.objective


def markdown(runs: list[Run], plots: list[str]) -> str:
    man = next((r for r in runs if r.is_reference), runs[0]).manifest
    bench = man.get("benchmark", {})
    sources = several_sources(runs)
    lines = [
        "# mmunlearn leaderboard",
        "",
        f"Benchmark `{bench.get('source')}` (fingerprint `{str(bench.get('fingerprint'))[:16]}`), "
        f"forget {man.get('forget')}%, model `{man.get('model', {}).get('source')}`, "
        f"{len(runs)} runs. Values: fractions in [0, 1], except factuality (the judge's 1-10 score, the papers' scale).",
        "",
        legend(runs),
        "",
        *_sources_note(runs),
    ]
    seeded = several_seeds(runs)
    objective_col = several_objectives(runs)
    for title, scols, col_marks in set_sections(runs):
        lines += [f"## {title}", ""]
        header = (
            ["method"]
            + (["from"] if sources else [])
            + (["objective"] if objective_col else [])
            + (["seeds"] if seeded else [])
            + [f"{t} {metric} ({MODE_SHORT[m]})" for (_s, t, metric, m) in scols]
        )
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        texts = headline_cells(runs, scols)
        for r in runs:
            cells = (
                _row_head(r, sources)
                + ([_objective_cell(r)] if objective_col else [])
                + ([str(r.n_seeds)] if seeded else [])
            )
            for c in scols:
                text = texts[r.label, c]
                mark = col_marks[c].get(r.label)
                cells.append(f"**{text}**" if mark == "best" else f"*{text}*" if mark == "worst" else text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += utility_kept_section(runs)
    if seeded:
        lines += seed_spread_section(runs)
    for stage, scols, col_marks in stage_sections(runs):
        lines += [f"## {stage.title}", "", stage.legend, ""]
        note = _stage_note(runs, stage)
        if note:
            lines += [f"Where a cell is –: {note}.", ""]
        for sub, tcols in stage_tables(stage, scols):
            if sub:
                lines += [f"### {sub}", ""]
            header = ["method"] + (["from"] if sources else []) + [_stage_header(c, m, sub) for c, m in tcols]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for r in runs:
                cells = _row_head(r, sources)
                for c, m in tcols:
                    text = stage_text(r, c, m)
                    mark = col_marks[c, m].get(r.label)
                    cells.append(f"**{text}**" if mark == "best" else f"*{text}*" if mark == "worst" else text)
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    gdf, keys = gap_frame(runs)
    if keys:
        lines += [
            "## Modality gap (image+text minus text-only)",
            "",
            "Positive: the model knows more (or forgot less) when it sees the image.",
            "",
        ]
        header = ["method"] + [f"{s} {t} {metric}" for (s, t, metric) in keys]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in runs:
            lines.append("| " + " | ".join([r.label] + [fmt_gap(gap_value(r, *k)) for k in keys]) + " |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    header = [
        "method",
        *(["from"] if sources else []),
        *(["objective"] if objective_col else []),
        "model",
        "base model",
        "run",
        "seed",
        "parameters",
    ]
    lines += ["## Runs", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        model = r.manifest.get("model") or {}
        base = (model.get("base_model") or {}).get("source")
        cells = [
            *_row_head(r, sources),
            *([_objective_cell(r)] if objective_col else []),
            f"`{model.get('source')}`",
            f"`{base}`" if base else "–",
            f"`{r.path}`",
            ", ".join(map(str, (r.results.get("seeds") or {}).get("seeds") or [r.seed])),
            f"`{json.dumps(r.params, sort_keys=True)}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_spread_section(runs: list[Run]) -> list[str]:
    """Markdown: mean ± between-seed sd (seeds) of each headline figure, for rows of several seeds."""
    seeded = [r for r in runs if r.n_seeds > 1]
    cols = headline_columns(runs)
    lines = [
        "## Seed spread (mean ± between-seed sd, number of seeds)",
        "",
        "How far one seed's figure moves: a new seed's 95% prediction interval is about mean ± "
        "t(0.975, n-1)·sd·sqrt(1+1/n), ±5 sd with 3 seeds (results.json `seeds.cells`).",
        "",
    ]
    header = ["method"] + [f"{s} {t} {metric} ({MODE_SHORT[m]})" for (s, t, metric, m) in cols]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in seeded:
        lines.append(
            "| " + " | ".join([r.label] + [seed_spread(r, s, t, metric, m) for (s, t, metric, m) in cols]) + " |"
        )
    return lines + [""]


def render_html(runs: list[Run], plots: list[str]) -> str:
    e = html.escape
    man = next((r for r in runs if r.is_reference), runs[0]).manifest
    sources = several_sources(runs)
    bench = man.get("benchmark", {})
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mmunlearn leaderboard</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".best{font-weight:bold;background:#d9f2d9}.worst{font-style:italic;background:#f8d7d7}"
        "img{max-width:100%}",
        "</style></head><body>",
        "<h1>mmunlearn leaderboard</h1>",
        f"<p>Benchmark <code>{e(str(bench.get('source')))}</code> (fingerprint "
        f"<code>{e(str(bench.get('fingerprint'))[:16])}</code>), forget {e(str(man.get('forget')))}%, "
        f"{len(runs)} runs.</p>",
        "<p>Best value per column in <span class='best'>bold green</span>, worst in "
        "<span class='worst'>italic red</span> (among unlearning methods; vanilla is the reference). "
        + e(
            HTML_DIRECTIONS
            if _states_directions(runs)
            else direction_sentence(objectives(runs), bold=False, sets=board_sets(runs))
        )
        + "</p>",
    ]
    objective_col = several_objectives(runs)
    for title, scols, col_marks in set_sections(runs):
        out.append(
            f"<h2>{e(title)}</h2><table><tr><th rowspan=2>method</th>"
            + ("<th rowspan=2>from</th>" if sources else "")
            + ("<th rowspan=2>objective</th>" if objective_col else "")
        )
        tasks = []
        for _s, t, metric, _m in scols:
            if (t, metric) not in tasks:
                tasks.append((t, metric))
        for t, metric in tasks:
            span = sum(1 for c in scols if c[1:3] == (t, metric))
            out.append(f"<th colspan={span}>{e(t)} {e(metric)}</th>")
        out.append("</tr><tr>" + "".join(f"<th>{e(MODE_SHORT[c[3]])}</th>" for c in scols) + "</tr>")
        texts = headline_cells(runs, scols)
        for r in runs:
            cells = "".join(f"<td class='{col_marks[c].get(r.label, '')}'>{e(texts[r.label, c])}</td>" for c in scols)
            head = "".join(
                f"<td>{e(x.strip('`'))}</td>"
                for x in _row_head(r, sources) + ([_objective_cell(r)] if objective_col else [])
            )
            out.append(f"<tr>{head}{cells}</tr>")
        out.append("</table>")
    for stage, scols, col_marks in stage_sections(runs):
        out.append(f"<h2>{e(stage.title)}</h2><p>{e(stage.legend)}</p>")
        for sub, tcols in stage_tables(stage, scols):
            if sub:
                out.append(f"<h3>{e(sub)}</h3>")
            out.append("<table><tr><th>method</th>" + ("<th>from</th>" if sources else ""))
            out.append("".join(f"<th>{e(_stage_header(c, m, sub))}</th>" for c, m in tcols) + "</tr>")
            for r in runs:
                head = "".join(f"<td>{e(x.strip('`'))}</td>" for x in _row_head(r, sources))
                cells = "".join(
                    f"<td class='{col_marks[c, m].get(r.label, '')}'>{stage_text(r, c, m)}</td>" for c, m in tcols
                )
                out.append(f"<tr>{head}{cells}</tr>")
            out.append("</table>")
    _, keys = gap_frame(runs)
    if keys:
        out.append(
            "<h2>Modality gap (image+text minus text-only)</h2><table><tr><th>method</th>"
            + "".join(f"<th>{e(s)} {e(t)} {e(metric)}</th>" for s, t, metric in keys)
            + "</tr>"
        )
        for r in runs:
            out.append(
                f"<tr><td>{e(r.label)}</td>" + "".join(f"<td>{fmt_gap(gap_value(r, *k))}</td>" for k in keys) + "</tr>"
            )
        out.append("</table>")
    for p in plots:
        out.append(f"<h3>{e(Path(p).stem)}</h3><img src='{e(Path(p).name)}' alt='{e(Path(p).stem)}'>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- plots
def _save_png(fig, path: Path) -> None:
    """savefig atomically, like every other output."""
    with atomic_file(path) as fh:
        fig.savefig(fh, dpi=100, format="png")  # tight_layout already ran; bbox "tight" would draw twice


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(runs: list[Run], out: Path) -> list[str]:
    """One PNG per task: a panel per set, a group per method, bars image+text vs text-only.
    Forget/test panels show the change relative to vanilla (when a vanilla run is present)."""
    plt = _pyplot()
    vanilla = next((r for r in runs if r.is_reference), None)
    written = []
    cols = headline_columns(runs)
    for t in task_headlines():
        metric = next((c[2] for c in cols if c[1] == t), None)
        sets = [s for s in board_sets(runs) if any(c[0] == s and c[1] == t and c[2] == metric for c in cols)]
        if metric is None or not sets:
            continue
        fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.8), squeeze=False)
        for ax, s in zip(axes[0], sets):
            # a set some row should forget in some mode is shown as its change against vanilla
            delta = vanilla is not None and any(should_fall(o, s, m) for o in objectives(runs) for m in MODES)
            shown = [r for r in runs if not (delta and r is vanilla)]
            width = 0.38
            for k, m in enumerate(MODES):
                ys: list[float] = []
                errs: tuple[list[float], list[float]] = ([], [])
                for r in shown:
                    v = value(r, (s, t, metric, m))
                    b = bounds(r, s, t, metric, m)
                    shift = 0.0
                    if delta and v is not None:
                        assert vanilla is not None  # delta is only set when there is a vanilla run
                        base = value(vanilla, (s, t, metric, m))
                        v, shift = (None, 0.0) if base is None else (v - base, base)
                    ys.append(float("nan") if v is None else v)
                    # the run's 95% interval (vanilla's figure taken as fixed on the change panels)
                    errs[0].append(0.0 if v is None or b is None else max(0.0, v - (b[0] - shift)))
                    errs[1].append(0.0 if v is None or b is None else max(0.0, (b[1] - shift) - v))
                xs = [i + (k - 0.5) * width for i in range(len(shown))]
                ax.bar(xs, ys, width, label=MODE_SHORT[m], color=("#4c72b0", "#dd8452")[k])
                ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor="black", elinewidth=0.7, capsize=2)
            ax.set_xticks(range(len(shown)))
            ax.set_xticklabels([r.label for r in shown], rotation=40, ha="right", fontsize=7)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_title(f"{s} ({'change vs vanilla' if delta else metric})", fontsize=9)
            ax.set_ylabel(f"{'Δ ' if delta else ''}{metric}", fontsize=8)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{t}: image+text vs text-only", fontsize=11)
        fig.tight_layout()
        path = out / f"bars_{t}.png"
        _save_png(fig, path)
        plt.close(fig)
        written.append(str(path))
    return written


def tradeoff_points(runs: list[Run], task: str, metric: str, mode: str) -> list[tuple[str, float, float]]:
    """(label, forget drop = vanilla - method on forget, retain kept = method / vanilla on retain).
    Where the row's objective keeps the forget figure in this mode (forget-visual, text-only), its
    drop is damage: the x value is negated (method - vanilla), so right is better for every row."""
    return [(label, x, y) for label, x, y, _xe, _ye in tradeoff_points_with_errors(runs, task, metric, mode)]


def tradeoff_points_with_errors(runs: list[Run], task: str, metric: str, mode: str):
    """tradeoff_points with each axis's 95% interval as (below, above) error lengths, from the
    method's own intervals with vanilla's figures taken as fixed ((0, 0) without an interval)."""
    vanilla = next((r for r in runs if r.is_reference), None)
    if vanilla is None:
        return []
    f0, r0 = value(vanilla, ("forget", task, metric, mode)), value(vanilla, ("retain", task, metric, mode))
    pts = []
    for r in runs:
        if r is vanilla:
            continue
        f, rv = value(r, ("forget", task, metric, mode)), value(r, ("retain", task, metric, mode))
        if f0 is None or r0 is None or f is None or rv is None or r0 == 0:
            continue
        sign = 1.0 if r.falls("forget", mode) else -1.0  # a kept forget figure: its drop is damage
        x, y = sign * (f0 - f), rv / r0
        fb, rb = bounds(r, "forget", task, metric, mode), bounds(r, "retain", task, metric, mode)
        xe = (0.0, 0.0)
        if fb is not None:
            lo, hi = sorted((sign * (f0 - fb[1]), sign * (f0 - fb[0])))
            xe = (max(0.0, x - lo), max(0.0, hi - x))
        ye = (0.0, 0.0) if rb is None else (max(0.0, y - rb[0] / r0), max(0.0, rb[1] / r0 - y))
        pts.append((r.label, x, y, xe, ye))
    return pts


def plot_tradeoff(runs: list[Run], out: Path) -> list[str]:
    """Figure-5-style scatter: rows = modes, columns = tasks; top right is best."""
    if not any(r.is_reference for r in runs):
        return []
    plt = _pyplot()
    tasks = [(t, m[0]) for t, m in task_headlines().items() if any(c[1] == t for c in headline_columns(runs))]
    if not tasks:
        return []
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {r.label: cycle[i % len(cycle)] for i, r in enumerate(runs)}  # one colour per method everywhere
    fig, axes = plt.subplots(len(MODES), len(tasks), figsize=(4.2 * len(tasks), 3.8 * len(MODES)), squeeze=False)
    for i, m in enumerate(MODES):
        for j, (t, metric) in enumerate(tasks):
            ax = axes[i][j]
            kept = {r.label for r in runs if not r.is_reference and not r.falls("forget", m)}
            for label, x, y, xe, ye in tradeoff_points_with_errors(runs, t, metric, m):
                ax.errorbar(
                    [x],
                    [y],
                    xerr=[[xe[0]], [xe[1]]],
                    yerr=[[ye[0]], [ye[1]]],
                    fmt="s" if label in kept else "o",  # square: forget kept here, x is method − vanilla
                    ms=4,
                    color=colours[label],
                    elinewidth=0.7,
                    capsize=2,
                )
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.axvline(0, color="grey", linewidth=0.6, linestyle="--")
            ax.axhline(1, color="grey", linewidth=0.6, linestyle="--")
            flipped = "\nsquares: forget kept by the objective, method − vanilla" if kept else ""
            ax.set_xlabel(f"forget drop ({metric}, vanilla − method){flipped}", fontsize=8)
            ax.set_ylabel(f"retain kept ({metric}, method / vanilla)", fontsize=8)
            ax.set_title(f"{t} — {MODE_SHORT[m]}", fontsize=9)
    fig.suptitle("Forgetting vs utility (top right is best)", fontsize=11)
    fig.tight_layout()
    path = out / "tradeoff.png"
    _save_png(fig, path)
    plt.close(fig)
    return [str(path)]


def plot_utility(runs: list[Run], out: Path) -> list[str]:
    """The seeds' Figure 5: forget drop (x, vanilla - method on the forget measure, per mode)
    against each utility measure (y; retain and celebrity in the same mode, a suite's figure as
    is), one panel per measure, one point per method and mode (o image+text, ^ text-only)."""
    forget = forget_measure(runs)
    measures = utility_measures(runs)
    vanilla = next((r for r in runs if r.is_reference), None)
    if forget is None or vanilla is None or not any(c[0] in utility_sets(runs) for c in measures):
        return []
    plt = _pyplot()
    t, metric = forget
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {r.label: cycle[i % len(cycle)] for i, r in enumerate(runs)}
    panels: dict[tuple[str, str, str], list[str]] = {}
    for c in measures:
        panels.setdefault((c[0], c[1], c[2]), []).append(c[3])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.8), squeeze=False)
    for ax, ((s, ut, um), modes) in zip(axes[0], panels.items()):
        for r in runs:
            for m, marker in (("image_text", "o"), ("text_only", "^")):
                x0, x1 = value(vanilla, ("forget", t, metric, m)), value(r, ("forget", t, metric, m))
                y = value(r, (s, ut, um, m if m in modes else modes[0]))
                if isinstance(x0, (int, float)) and isinstance(x1, (int, float)) and isinstance(y, (int, float)):
                    ax.scatter([x0 - x1], [y], marker=marker, s=22, color=colours[r.label])
                    if m == "image_text":
                        ax.annotate(r.label, (x0 - x1, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"forget drop ({t} {metric}, vanilla − method)", fontsize=8)
        ax.set_ylabel(f"{s} {um}", fontsize=8)
        ax.set_title(set_title(s) if s in utility_sets(runs) else f"{s} ({ut})", fontsize=8)
    fig.suptitle("Forgetting vs utility (o image+text, ^ text-only; right and high is best)", fontsize=10)
    fig.tight_layout()
    path = out / "utility.png"
    _save_png(fig, path)
    plt.close(fig)
    return [str(path)]


def plot_stages(runs: list[Run], out: Path) -> list[str]:
    """One PNG per stage: a panel per column, each method a point at (text-only, image+text), the
    diagonal (no modality gap) and the column's ideal marked: a method above the diagonal leaks
    more through the image than through text."""
    plt = _pyplot()
    written = []
    for stage, scols, _marks in stage_sections(runs):
        own = stage.plot(runs, plt)
        if own is not None:
            path = out / f"{stage.name}.png"
            _save_png(own, path)
            plt.close(own)
            written.append(str(path))
            continue
        cols = [c for c in stage.columns if any(cc == c for cc, _m in scols)]
        fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 3.6), squeeze=False)
        for ax, c in zip(axes[0], cols):
            pts = [
                (r.label, x, y)
                for r in runs
                if (x := stage_value(r, c, "text_only")) is not None
                and (y := stage_value(r, c, "image_text")) is not None
            ]
            for label, x, y in pts:
                ax.scatter([x], [y], s=25)
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            values = [v for _l, x, y in pts for v in (x, y)] + ([c.ideal] if c.ideal is not None else [])
            if values:
                lo, hi = min(values), max(values)
                pad = 0.05 * (hi - lo or 1.0)
                ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linewidth=0.6, linestyle="--")
            if c.ideal is not None:
                ax.axvline(c.ideal, color="green", linewidth=0.6, linestyle=":")
                ax.axhline(c.ideal, color="green", linewidth=0.6, linestyle=":")
            ax.set_xlabel(f"{c.metric} ({MODE_SHORT['text_only']})", fontsize=8)
            ax.set_ylabel(f"{c.metric} ({MODE_SHORT['image_text']})", fontsize=8)
            ax.set_title(f"{c.set} {c.key}", fontsize=9)
        fig.suptitle(f"{stage.title} — image+text vs text-only (dotted: ideal)", fontsize=10)
        fig.tight_layout()
        path = out / f"{stage.name}.png"
        _save_png(fig, path)
        plt.close(fig)
        written.append(str(path))
    return written


# ---------------------------------------------------------------- entry point
def build_leaderboard(paths, out, objective: str | None = None) -> dict[str, str]:
    """Write leaderboard.md/.csv/.html, modality_gap.csv and PNG plots into `out`; returns name -> path.
    `objective`: judge every row under it instead of the objective its run recorded (a reading of
    the same figures under another target; only `--select best` depends on the objective at run
    time, and a run that used it is refused)."""
    runs = load_runs(paths)
    if objective is not None:
        check_objective(objective)
        for r in runs:
            if (r.manifest.get("config") or {}).get("select") == "best" and r.objective != objective:
                raise ConfigError(f"{r.path}: its model was selected under {r.objective}; it cannot be re-judged")
            r.manifest = {**r.manifest, "objective": objective}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for r in runs:  # run folders as seen from the leaderboard files (links work; no machine paths)
        r.path = os.path.relpath(os.path.abspath(r.path), os.path.abspath(out))
    plots = plot_bars(runs, out) + plot_tradeoff(runs, out) + plot_utility(runs, out) + plot_stages(runs, out)
    buf = io.StringIO()
    frame(runs).to_csv(buf, index=False)
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())
    buf = io.StringIO()
    gap_frame(runs)[0].to_csv(buf, index=False)
    atomic_write_text(out / "modality_gap.csv", buf.getvalue())
    atomic_write_text(out / "leaderboard.md", markdown(runs, plots))
    atomic_write_text(out / "leaderboard.html", render_html(runs, plots))
    files = {
        name: str(out / name) for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "modality_gap.csv")
    }
    files.update({Path(p).name: p for p in plots})
    return files
