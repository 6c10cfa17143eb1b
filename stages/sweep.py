"""Checkpoint sweep: forgetting and utility *during* training, per modality, and the step at which
a training method collapses.

Every `--eval-every N` optimiser steps of the method's training loop (GA, GradDiff, KL-Min, NPO,
MMUnlearner: any loop that reports to harness.core.checkpoints), the live model answers a fixed
subset: at most `--sweep-limit` questions per (set, task, mode) of forget and retain, both
modes, chosen as `--limit` chooses (a hash of the question id, so the subset is the same for
every method and seed, and part of the run's own questions). The run's output model (the last
step, or the `--select best` checkpoint) is read from the run's own samples on the same subset:
without --select best the final point equals a normal run.

At each point the retain answers go through the collapse detector (harness.core.robustness:
empty, letterless multiple choice, or repetitive); the first checkpoint where most retain
answers of one kind (free generation, multiple choice) are degenerate is the first collapsed step.

`--select best` makes the run's output the best checkpoint instead of the last one, by the rule
stated in harness.core.robustness (SELECT_RULE: the worst mode's mean retain - forget, among
checkpoints that did not collapse): the watcher keeps a CPU copy of the best checkpoint's
trainable weights so far (LoRA adapters; a full fine-tune's whole model), scores the last step
too, and puts the best weights back before the method merges them. The selection is made on the
sweep subset, which is part of the questions then reported: selected figures are optimistic by
the amount of that choice (the manifest records the rule, every checkpoint's trade-off and the step).
What counts as forgetting follows the run's objective (harness.core.objectives): per mode and
task, the trade-off is the mean of the swept figures that should stay minus the mean of those that
should fall (none: 0). Under forget-both that is SELECT_RULE's retain - forget in both modes; under
forget-visual the text-only forget figure is kept, so text-only counts (retain + forget) / 2 and a
checkpoint that erased what the model knows in text about the forgotten people ranks lower.

Writes: the curve (every point's metrics and collapse summary) in the manifest's stage record,
samples per checkpoint in OUT/sweep/step-<n>/samples.jsonl (a re-applied method re-evaluates
only what is missing), and metrics["retain"]["collapse"][mode] = {first_collapse_step, collapsed,
checkpoints_scored, final_degenerate_share (of the run's output model)}. A method with no training steps (vanilla, MANU,
Prompting) gets "not available: the method reports no training steps".

Intervals (`intervals`): final_degenerate_share by a profile bootstrap of the output model's
retain answers' degenerate flags, the worst kind's share recomputed in every resample;
first_collapse_step and collapsed describe this run's training, not a sample: no interval.
"""

from __future__ import annotations

from pathlib import Path

from mmunlearn.harness.core import robustness
from mmunlearn.harness.core.contracts import SampleResult, get_task, registered_tasks
from mmunlearn.harness.core.objectives import DEFAULT_OBJECTIVE, should_fall
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.results import SampleStore, atomic_write_json, read_json
from mmunlearn.harness.core.checkpoints import Watcher, restore, snapshot
from mmunlearn.harness.core.robustness import SELECT_RULE, collapse_by_kind, degenerate, first_collapse
from mmunlearn.harness.core.stages import Column, Stage, StageContext, StageOutput, register_stage, score_questions
from mmunlearn.harness.core.uncertainty import Bootstrap, max_of_means_interval, no_interval

SWEEP_DIR = "sweep"
SWEEP_SETS = ("forget", "retain")
SWEEP_TASKS = ("classification", "generation", "cloze")
NO_STEPS = "not available: the method reports no training steps"
NONE_ELIGIBLE = "no checkpoint eligible (every scored checkpoint collapsed): the final model is kept"


JUDGED = ("generation", "classification")  # answer kinds the collapse detector reads (not one-word cloze)
CLASSIC = "(retain - forget)"  # SELECT_RULE's figure, as it states it


def _headline(cell: dict) -> float | None:
    """A sweep cell's figure: its first headline metric scored (as robustness.tradeoff reads it)."""
    return next((v for v in cell.values() if v is not None), None)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def objective_view(metrics: dict, modes, objective: str) -> dict:
    """A sweep point's metrics as robustness.tradeoff reads them under `objective`: per task and
    mode, "retain" the mean of the swept figures that should stay and "forget" the mean of those
    that should fall (0 where none does); a task counts in a mode only where every swept set has a
    figure. Under forget-both: retain and forget themselves (the mean of one figure is that figure)."""
    view: dict = {"retain": {}, "forget": {}}
    for task in metrics.get("retain", {}):  # robustness.tradeoff's order (it sums in it)
        for m in modes:
            figures = {s: _headline(metrics.get(s, {}).get(task, {}).get(m, {})) for s in SWEEP_SETS}
            if any(v is None for v in figures.values()):
                continue
            kept = [v for s, v in figures.items() if v is not None and not should_fall(objective, s, m)]
            gone = [v for s, v in figures.items() if v is not None and should_fall(objective, s, m)]
            view["retain"].setdefault(task, {})[m] = {"kept": _mean(kept)}
            view["forget"].setdefault(task, {})[m] = {"fallen": _mean(gone)}
    return view


def select_best(points, modes, objective: str = DEFAULT_OBJECTIVE):
    """robustness.select_best (its eligibility and ties) on each point's objective_view."""
    viewed = [{**p, "metrics": objective_view(p["metrics"], modes, objective)} for p in points]
    return robustness.select_best(viewed, modes)


def _side(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"mean of {' and '.join(names)}"


def select_rule(objective: str, modes=MODES) -> str:
    """SELECT_RULE with its (retain - forget) restated per mode where the objective keeps or drops
    other swept figures (forget-visual: text-only forget is kept)."""
    per_mode = {}
    for m in modes:
        kept = [s for s in SWEEP_SETS if not should_fall(objective, s, m)]
        gone = [s for s in SWEEP_SETS if should_fall(objective, s, m)]
        per_mode[m] = f"{_side(kept)} - {_side(gone)}" if kept and gone else _side(kept) if kept else f"-{_side(gone)}"
    if set(per_mode.values()) == {CLASSIC.strip("()")}:
        return SELECT_RULE
    text = "(" + "; ".join(f"{m}: {f}" for m, f in per_mode.items()) + f"; objective {objective})"
    return SELECT_RULE.replace(CLASSIC, text) if CLASSIC in SELECT_RULE else f"{SELECT_RULE}; figure {text}"


def reasons(results: dict[str, SampleResult]) -> list[str | None]:
    """The degeneracy reason of every answer (None: fluent); multiple choice needs its letter."""
    out = []
    for r in results.values():
        if r.extra.get("excluded"):
            continue
        mc = r.task == "classification"
        out.append(degenerate(r.response, needs_letter=mc, letter=r.extra.get("letter")))
    return out


@register_stage
class SweepStage(Stage):
    name = "sweep"
    title = "Checkpoint sweep: when does training collapse?"
    keys = ("collapse",)
    lower_means_known = ("final_degenerate_share", "collapsed")  # on retain, more of them is worse
    reads = SWEEP_TASKS
    columns = (
        Column("retain", "collapse", "first_collapse_step", None, "first collapsed step", empty="never"),
        Column("retain", "collapse", "final_degenerate_share", 0.0, "degenerate retain answers at the end (0 ideal)"),
    )
    legend = (
        "A retain answer is degenerate when empty, letterless (multiple choice) or repetitive (half its word "
        "trigrams repeat); a checkpoint collapsed when most retain answers are. first_collapse_step: the first "
        "such optimiser step (never: no checkpoint collapsed)."
    )

    def plot(self, runs: list, plt):
        """Forgetting vs utility over training, a panel per mode: forget and retain cloze accuracy
        (else the first task swept) per checkpoint and method; a cross at the first collapse."""
        curves = [
            (r.label, rec["curve"])
            for r in runs
            if (rec := (r.manifest.get("stages") or {}).get("sweep")) and rec.get("curve")
        ]
        if not curves:
            return None
        task = next(iter(curves[0][1][0]["metrics"]["forget"]))
        task = "cloze" if "cloze" in curves[0][1][0]["metrics"]["forget"] else task
        fig, axes = plt.subplots(1, len(MODES), figsize=(5.0 * len(MODES), 3.4), squeeze=False)
        for ax, m in zip(axes[0], MODES):
            for i, (label, curve) in enumerate(curves):
                color = f"C{i % 10}"
                steps = [p["step"] for p in curve]
                for s, style in (("forget", "-"), ("retain", "--")):
                    ys = [next(iter(p["metrics"][s][task][m].values()), None) for p in curve]
                    ax.plot(steps, ys, style, color=color, marker=".", label=f"{label} {s}")
                chosen = next((p for p in curve if p.get("output") and not p.get("final")), None)
                if chosen is not None:  # --select best kept an earlier checkpoint
                    y = next(iter(chosen["metrics"]["forget"][task][m].values()), None)
                    ax.plot([chosen["step"]], [y], "*", color=color, markersize=10)
                hit = next((p["step"] for p in curve if p["collapse"][m]["collapsed"]), None)
                if hit is not None:
                    ax.axvline(hit, color=color, linewidth=0.6, linestyle=":")
            ax.set_xlabel("optimiser step", fontsize=8)
            ax.set_ylabel(f"{task} (solid: forget, dashed: retain)", fontsize=8)
            ax.set_title(f"{m} (dotted: first collapse; star: selected checkpoint)", fontsize=9)
            ax.legend(fontsize=6)
        fig.suptitle("Checkpoint sweep: forgetting vs utility over training", fontsize=10)
        fig.tight_layout()
        return fig

    def fingerprint(self, cfg, display) -> dict:
        selecting = {"select": cfg.select} if cfg.select != "final" else {}  # absent: earlier runs keep their hash
        return {"eval_every": cfg.eval_every, "sweep_limit": cfg.sweep_limit, **selecting}

    # ------------------------------------------------------------------ the subset and its scoring
    @staticmethod
    def subset(ctx: StageContext) -> dict[tuple[str, str, str], list]:
        tasks = [t for t in SWEEP_TASKS if t in (ctx.cfg.tasks or registered_tasks())]
        return {
            (s, t, m): ctx.subset(ctx.select(ctx.bench.questions(sets=[s], tasks=[t], modes=[m])), ctx.cfg.sweep_limit)
            for s in SWEEP_SETS
            for t in tasks
            for m in MODES
        }

    def results(self, ctx: StageContext, model, store, step: int) -> dict:
        """(set, task, mode) -> qid -> the stored result of every subset question at this step."""
        return {
            key: score_questions(key[1], model, qs, ctx, store, f"sweep step {step} {key[1]}")
            for key, qs in self.subset(ctx).items()
        }

    def point(self, ctx: StageContext, model, store, step: int, results: dict | None = None) -> dict:
        """One point of the curve: per set, task, mode the task's aggregate; per mode the
        collapse summary of the retain answers (`results`: this step's, if already read)."""
        if results is None:
            results = self.results(ctx, model, store, step)
        metrics: dict = {}
        for (s, t, m), res in results.items():
            agg = get_task(t).aggregate(list(res.values()))
            metrics.setdefault(s, {}).setdefault(t, {})[m] = {
                k: agg[k] for k in get_task(t).headline_metrics() if k in agg
            }
        collapse = {
            m: collapse_by_kind({t: reasons(results["retain", t, m]) for t in JUDGED if ("retain", t, m) in results})
            for m in MODES
        }
        return {"step": step, "metrics": metrics, "collapse": collapse}

    # ------------------------------------------------------------------ during training
    def watch(self, ctx: StageContext) -> Watcher:
        every, select = ctx.cfg.eval_every, ctx.cfg.select == "best"
        objective = getattr(ctx.cfg, "objective", DEFAULT_OBJECTIVE)
        folder = Path(ctx.out) / SWEEP_DIR
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "steps.json", {"eval_every": every, "steps": [], "last_step": 0})  # a fresh apply

        done: dict = {"eval_every": every, "steps": [], "last_step": 0}
        points: list[dict] = []  # scored live, for --select best
        best: dict = {}  # the best checkpoint's trainable weights so far (checkpoints.snapshot)

        def score(vlm, n: int) -> None:
            points.append(self.point(ctx, lambda: vlm, SampleStore(folder / f"step-{n:06d}"), n))
            done["steps"].append(n)
            if select and select_best(points, MODES, objective)[0] == n:
                best["weights"] = snapshot(vlm.model)

        def step(vlm, n: int) -> None:
            if n % every == 0:
                score(vlm, n)
            done["last_step"] = n
            atomic_write_json(folder / "steps.json", done)  # after every step: the last one is the final point

        def finished(vlm) -> None:
            """--select best: score the last step if it was not, then put the best checkpoint back."""
            if not select or not done["last_step"]:
                return
            if done["steps"][-1:] != [done["last_step"]]:
                score(vlm, done["last_step"])
            chosen, scores = select_best(points, MODES, objective)
            if chosen is not None and chosen != done["last_step"]:
                restore(vlm.model, best["weights"])
            best.clear()
            done["selected"] = {
                "rule": select_rule(objective),
                "step": chosen,
                "tradeoff": {str(k): v for k, v in scores.items()},
                **({} if chosen is not None else {"note": NONE_ELIGIBLE}),
            }
            atomic_write_json(folder / "steps.json", done)

        return Watcher(step, finished)

    # ------------------------------------------------------------------ after the run
    def run(self, ctx: StageContext) -> StageOutput:
        folder = Path(ctx.out) / SWEEP_DIR
        done = read_json(folder / "steps.json", "sweep steps") if (folder / "steps.json").exists() else None
        if not done or not done.get("last_step"):
            cell = {"first_collapse_step": None, "collapsed": None, "note": NO_STEPS}
            nothing: dict = {"curve": [], "note": NO_STEPS}
            if ctx.cfg.select == "best":
                rule = select_rule(getattr(ctx.cfg, "objective", DEFAULT_OBJECTIVE))
                nothing["selected"] = {"rule": rule, "step": None, "note": NO_STEPS}
            return StageOutput({"retain": {"collapse": {m: dict(cell) for m in MODES}}}, nothing)
        selected = done.get("selected")
        last = done["last_step"]
        output = selected["step"] if selected and selected["step"] is not None else last  # the run's own model
        curve = []
        answers: dict = {}  # the output model's subset answers (for the intervals)
        for s in sorted({*done["steps"], last}):
            if s == output:  # the method's output: the run's own samples (a normal run's answers)
                answers = self.results(ctx, ctx.vlm, ctx.store, s)
                point = {**self.point(ctx, ctx.vlm, ctx.store, s, answers), "output": True}
            else:
                point = self.point(ctx, ctx.vlm, SampleStore(folder / f"step-{s:06d}"), s)
            curve.append({**point, **({"final": True} if s == last else {})})
        out_point = next(p for p in curve if p.get("output"))
        metrics = {
            "retain": {
                "collapse": {
                    m: {
                        "first_collapse_step": first_collapse(
                            [(p["step"], p["collapse"][m]["collapsed"]) for p in curve]
                        ),
                        "collapsed": float(any(p["collapse"][m]["collapsed"] for p in curve)),
                        "checkpoints_scored": len(curve),
                        "final_degenerate_share": out_point["collapse"][m]["degenerate_share"],
                    }
                    for m in MODES
                }
            }
        }
        record = {
            "eval_every": done["eval_every"],
            "sweep_limit": ctx.cfg.sweep_limit,
            "last_step": last,
            "curve": curve,
            **({"selected": selected} if selected else {}),
        }
        return StageOutput(metrics, record, evidence=answers)

    def intervals(self, ctx: StageContext, output: StageOutput, boot: Bootstrap) -> dict:
        """final_degenerate_share: each retain answer's degenerate flag (0/1) by kind, profiles
        resampled once for all kinds and the worst kind's share taken in each resample, as the
        figure is; the step and the yes/no of collapse: no interval."""
        answers = output.evidence or {}
        out: dict = {}
        for m, cell in output.metrics["retain"]["collapse"].items():
            found = {}
            if cell.get("final_degenerate_share") is not None:
                kinds = {}
                for t in JUDGED:
                    kept = [r for r in answers.get(("retain", t, m), {}).values() if not r.extra.get("excluded")]
                    flags = [float(why is not None) for why in reasons({r.qid: r for r in kept})]
                    kinds[t] = (flags, [r.profile_id for r in kept])
                method = "profile bootstrap of the worst answer kind's degenerate share (max over kinds per resample)"
                found["final_degenerate_share"] = max_of_means_interval(kinds, boot, method).to_dict()
            for figure, why in (
                ("first_collapse_step", "a training step of this run, not a sample figure: no interval"),
                ("collapsed", "whether any checkpoint collapsed: a yes/no of this run's training, no interval"),
            ):
                if cell.get(figure) is not None:
                    found[figure] = no_interval(cell[figure], why)
            out[m] = found
        return {"retain": {"collapse": out}}
