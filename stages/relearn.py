"""Relearning attack across modalities: do a few fine-tuning steps on *some* forgotten facts, in
one modality, bring back the *other* forgotten facts, in either modality?

Deeb & Roger's retraining-on-T, split by modality. The forget profiles are split into K
disjoint, seeded folds (harness.core.robustness.fold_split). For each fold k and each relearn
modality r (text_only: the facts' question/answer text; image_text: the same with the profile's
image), a copy of the unlearned model is fine-tuned on the other folds' forget facts in
modality r (the shared training loop of methods/training.py, plain NLL descent, a budget in
optimiser steps), then answers fold k's forget questions in *both* modes. Each forget question
is thus answered by an attack that never trained on its profile.

Per relearn task metric and evaluation mode, with r the relearn modality:

    recovery_from_<r> = (relearned - unlearned) / (original - unlearned)

(0: nothing came back, 1: back to the original). The control repeats the attack on as many
*retain* facts (same modality, steps, seed): recovery from generic fine-tuning, not from the
forget facts, shows there as control_recovery_from_<r>. "original" is the model the method
started from (`--model`, or `--base-model` for an external checkpoint); where unlearning moved
the metric by less than MIN_REMOVED (0.1) the recovery is None with a note.

The attack's own profiles are scored too: trained_recovery_from_<r> is the recovery on the facts
it fine-tuned on (in mode r), in each evaluation mode. It says whether the attack worked at all
(near 1 in mode r) and, in the other mode, whether a fact relearned in one modality is back in
the other; the held-out figure says whether relearning some facts brings back *others*.

metrics["forget"]["relearn_<task>"][eval mode] = {metric, original, unlearned,
relearned_from_<r>, control_from_<r>, trained_from_<r>, recovery_from_<r>,
control_recovery_from_<r>, trained_recovery_from_<r>, questions_scored, note}.
Samples: OUT/relearn/<attack>/samples.jsonl per attack model (resumable: an attack whose
questions are all stored is not trained again), the folds in the manifest.

Intervals (`intervals`): every mean by a profile bootstrap over its own answers; every recovery by
resampling profiles once and taking the three models' answers to the same questions together
(original, unlearned, relearned aligned by question; a trained-on question's relearned answer is
the mean of its K-1 attacks', as the pooled figure weighs it).
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from mmunlearn.harness.core.contracts import (
    FactPair,
    Method,
    MethodParams,
    UnlearnData,
    get_task,
    mean_answer_nll,
    parse_params,
    registered_tasks,
)
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.robustness import NOT_DEFINED, fold_split, recovery, removed_enough
from mmunlearn.harness.core.uncertainty import Bootstrap
from mmunlearn.harness.core.stages import (
    Column,
    Stage,
    StageContext,
    StageOutput,
    identity_store,
    register_stage,
    score_questions,
)
from mmunlearn.methods.training import TrainParams, train

RELEARN_DIR = "relearn"
# metrics[forget][key] -> (task, metric): each task's headline metrics that the attack reports.
RELEARN_KEYS = {
    "relearn_classification": ("classification", "accuracy"),
    "relearn_classification_loglik_frame": ("classification", "accuracy_loglik_frame"),
    "relearn_classification_loglik_answer": ("classification", "accuracy_loglik_answer"),
    "relearn_generation": ("generation", "rougeL"),
    "relearn_cloze": ("cloze", "accuracy"),
}
NO_ORIGINAL = "not defined: no original model (pass --base-model, the model this checkpoint was unlearned from)"
_original_cache: dict[str, dict] = {}  # weights identity -> stored results (one process scores an original once)


@dataclass
class RelearnParams(MethodParams):
    """The attack's budget (`--relearn-param k=v`). Real models: lr 1e-5, 50-150 steps (Deeb &
    Roger; Lynch et al.). The embedded 5M-parameter model needs a larger lr, as its demo methods
    do: 2e-3 (theirs) for 48 steps (3-7 passes over half the forget facts, which it then fits:
    answer NLL about 0.5) takes seconds on a CPU."""

    method: ClassVar[str] = "relearn"  # how a bad --relearn-param names itself
    folds: int = 2
    steps: int = 48
    lr: float = 2e-3
    batch_size: int = 4
    finetune: Literal["lora", "full"] = "lora"
    control: bool = True

    def validate(self):
        self.require("folds", self.folds >= 2, "an integer >= 2")
        self.require("steps", self.steps >= 1, "an integer >= 1")
        self.require("lr", self.lr > 0, "a number > 0")
        self.require("batch_size", self.batch_size >= 1, "an integer >= 1")


class Relearn(Method):
    """parse_params' view of the attack (its settings read like a method's --param); not a
    registered method."""

    name = "relearn"
    Params = RelearnParams


def relearn_loss(model, forget, retain, reference):
    """Plain fine-tuning: descend the mean answer-token NLL of the facts being relearned."""
    nll = mean_answer_nll(model, forget).mean()
    return nll, {"nll": nll.item()}


def attack(vlm, pairs: list[FactPair], mode: str, params: RelearnParams, seed: int) -> tuple:
    """A copy of `vlm` fine-tuned on `pairs` for params.steps optimiser steps; (copy, report)."""
    attacked = copy.copy(vlm)
    attacked.model = copy.deepcopy(vlm.model)
    batches = max(1, math.ceil(len(pairs) / params.batch_size))
    train_params = TrainParams(
        lr=params.lr,
        epochs=math.ceil(params.steps / batches),
        batch_size=params.batch_size,
        finetune=params.finetune,
        forget_modes=(mode,),  # type: ignore[arg-type]  # a mode of MODES
    )
    data = UnlearnData(forget={mode: pairs})
    report = train(attacked, data, train_params, seed, relearn_loss, method="relearn", max_steps=params.steps)
    return attacked, {
        "steps": report["changed"]["steps"],
        "pairs": len(pairs),
        "loss_by_epoch": report["loss_by_epoch"],
    }


def _per_question(results, metric: str) -> dict[str, float | None]:
    """qid -> the question's score as the task's aggregate counts it (None: excluded or not
    scored); a question answered several times (by K-1 attacks) -> the mean of its answers."""
    got: dict[str, list[float]] = {}
    for r in results:
        scored = got.setdefault(r.qid, [])
        if (v := r.scores.get(metric)) is not None and not r.extra.get("excluded"):
            scored.append(float(v))
    return {q: (sum(vs) / len(vs) if vs else None) for q, vs in got.items()}


def _mean(task: str, metric: str, results) -> float | None:
    value = get_task(task).aggregate(list(results))[metric]
    return None if value is None else float(value)


@register_stage
class RelearnStage(Stage):
    name = "relearn"
    reads = ("classification", "generation", "cloze")  # MLLMU-Bench's question types (checked before a run)
    title = "Relearning: do a few steps on some forget facts bring the others back?"
    keys = tuple(RELEARN_KEYS)
    columns = tuple(
        Column("forget", key, f"{kind}recovery_from_{r}", ideal, f"{kind or 'attack '}recovery, relearned in {r}")
        for key in ("relearn_cloze", "relearn_classification_loglik_frame", "relearn_generation")
        for kind, ideal in (("", 0.0), ("control_", None), ("trained_", None))
        for r in MODES
    )
    table_per_key = True
    legend = (
        "recovery = (relearned - unlearned) / (original - unlearned) after fine-tuning a copy of the unlearned model "
        "on some forget profiles' facts in one modality (_from_<modality>; the mode in brackets: evaluation "
        "modality). 0 = nothing came back, 1 = all of it. recovery: on the held-out profiles (0 ideal); control_: "
        "the same attack on retain facts (what generic fine-tuning brings back); trained_: on the profiles the "
        "attack trained on (near 1 in its own modality: the attack worked; in the other: a fact relearned in one "
        "modality is back in the other)."
    )

    def plot(self, runs: list, plt):
        """Recovery heat-maps: a row per method, a panel per task; in each, relearn modality
        (rows) x evaluation modality (columns), coloured by the held-out recovery and annotated
        with it, the control's ("ctl") and the trained profiles' ("own"); "n/a" where not defined."""
        keys = [k for k in ("relearn_cloze", "relearn_classification_loglik_frame", "relearn_generation")]
        grid: dict[tuple[str, str], list[list]] = {}
        for r in runs:
            for k in keys:
                cells = r.metrics.get("forget", {}).get(k, {})
                values = [
                    [
                        tuple(
                            cells.get(e, {}).get(f"{kind}recovery_from_{rm}") for kind in ("", "control_", "trained_")
                        )
                        for e in MODES
                    ]
                    for rm in MODES
                ]
                if any(v[0] is not None for row in values for v in row):
                    grid[r.label, k] = values
        labels = list(dict.fromkeys(label for label, _k in grid))
        keys = [k for k in keys if any(kk == k for _l, kk in grid)]
        if not grid:
            return None
        fig, axes = plt.subplots(len(labels), len(keys), figsize=(2.6 * len(keys), 2.2 * len(labels)), squeeze=False)
        short = {"image_text": "img+txt", "text_only": "txt"}
        for i, label in enumerate(labels):
            for j, k in enumerate(keys):
                ax = axes[i][j]
                cell = grid.get((label, k))
                ax.set_xticks([0, 1], [f"eval {short[m]}" for m in MODES], fontsize=7)
                ax.set_yticks([0, 1], [f"relearn {short[m]}" for m in MODES], fontsize=7)
                if cell is None:
                    ax.set_axis_off()
                    continue
                shown = [[v[0] if v[0] is not None else float("nan") for v in row] for row in cell]
                ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="Reds")
                for a in range(2):
                    for b in range(2):
                        held, control, own = (("n/a" if v is None else f"{v:.2f}") for v in cell[a][b])
                        text = held if held == "n/a" else f"{held}\nctl {control}\nown {own}"
                        ax.text(b, a, text, ha="center", va="center", fontsize=6)
                ax.set_title(f"{label}\n{k.removeprefix('relearn_')}", fontsize=7)
        fig.suptitle("Recovery on held-out forget profiles after relearning (0 = robust, 1 = all back)", fontsize=9)
        fig.tight_layout()
        return fig

    def fingerprint(self, cfg, display) -> dict:
        params = parse_params(Relearn, dict(cfg.relearn_params))  # a bad --relearn-param fails before any work
        return {"relearn_params": dict(params.__dict__)}

    def run(self, ctx: StageContext) -> StageOutput:
        cfg = ctx.cfg
        params = parse_params(Relearn, dict(cfg.relearn_params))
        folds = fold_split([p.id for p in ctx.bench.profiles["forget"]], params.folds, cfg.seed)
        tasks = [t for t in ("classification", "generation", "cloze") if t in (cfg.tasks or registered_tasks())]
        questions = {
            (t, m): ctx.select(ctx.bench.questions(sets=["forget"], tasks=[t], modes=[m])) for t in tasks for m in MODES
        }
        folder = Path(ctx.out) / RELEARN_DIR
        unlearned = {
            k: score_questions(k[0], ctx.vlm, qs, ctx, ctx.store, "relearn unlearned") for k, qs in questions.items()
        }
        original_source = cfg.base_model or (cfg.model if cfg.method != "vanilla" else None)
        record: dict = {
            "params": params.__dict__,
            "folds": folds,
            "original": original_source and ctx.display(original_source),
        }
        if original_source is None:
            evidence: tuple[list, dict, dict | None, dict] = (tasks, unlearned, None, {})
            return StageOutput(self._metrics(*evidence, NO_ORIGINAL), record, evidence)
        original = self._original(ctx, original_source, questions, folder)
        vlm = ctx.vlm()
        unlearned_hash = vlm.weights_hash()
        if original["_weights_hash"] == unlearned_hash:
            evidence = (tasks, unlearned, original, {})
            return StageOutput(self._metrics(*evidence, NOT_DEFINED), record, evidence)
        attacks: dict[str, dict] = {}
        record["attacks"] = {}
        for kind in ("attack", "control") if params.control else ("attack",):
            for r in MODES:
                name = f"{kind}-{r}"
                attacks[name], record["attacks"][name] = self._attack(
                    ctx, vlm, unlearned_hash, kind, r, folds, params, questions, folder
                )
        evidence = (tasks, unlearned, original, attacks)
        return StageOutput(self._metrics(*evidence, None), record, evidence)

    def intervals(self, ctx: StageContext, output: StageOutput, boot: Bootstrap) -> dict:
        """Means: profile bootstrap of each model's answers. Recoveries: recovery_bootstrap over the
        questions of the cell, the original's, unlearned model's and relearned answers per question
        resampled together by profile (each held-out question is answered by one attack; each
        trained-on question by K-1, averaged, which weighs it as the pooled mean does)."""
        tasks, unlearned, original, attacks = output.evidence
        out: dict = {}
        for key, (task, metric) in RELEARN_KEYS.items():
            for m, cell in output.metrics["forget"].get(key, {}).items():
                unl = _per_question(unlearned[task, m].values(), metric)
                qids = list(unl)
                profiles = {r.qid: r.profile_id for r in unlearned[task, m].values()}
                answers = {"unlearned": unl}
                if original:
                    answers["original"] = _per_question(original[task, m].values(), metric)
                for r in MODES:
                    for kind, name in (("attack", "relearned"), ("control", "control")):
                        if (res := attacks.get(f"{kind}-{r}")) is not None:
                            answers[f"{name}_from_{r}"] = _per_question(res["held_out"][task, m].values(), metric)
                    if (res := attacks.get(f"attack-{r}")) is not None and res["trained"][task, m]:
                        answers[f"trained_from_{r}"] = _per_question(res["trained"][task, m], metric)
                found = {}
                for figure, per_q in answers.items():
                    if cell.get(figure) is not None:
                        ids = list(per_q)
                        found[figure] = boot.mean([per_q[q] for q in ids], [profiles[q] for q in ids]).to_dict()
                for r in MODES:
                    for prefix, figure in (("", "relearned"), ("control_", "control"), ("trained_", "trained")):
                        if cell.get(f"{prefix}recovery_from_{r}") is None:
                            continue  # not defined: no interval
                        rel = answers[f"{figure}_from_{r}"]
                        iv = boot.recovery(
                            [answers["original"].get(q) for q in qids],
                            [unl.get(q) for q in qids],
                            [rel.get(q) for q in qids],
                            [profiles[q] for q in qids],
                        )
                        found[f"{prefix}recovery_from_{r}"] = iv.to_dict()
                out.setdefault(key, {})[m] = found
        return {"forget": out}

    def _original(self, ctx: StageContext, source: str, questions: dict, folder: Path) -> dict:
        """The original model's results on the forget questions (OUT/relearn/original)."""
        from mmunlearn.harness.core.model import load_vlm

        cfg = ctx.cfg
        holder: dict = {}

        def model():
            if "vlm" not in holder:
                holder["vlm"] = load_vlm(
                    source, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
                )
            return holder["vlm"]

        identity = {
            "source": ctx.display(source),
            "bench_fingerprint": ctx.bench.fingerprint,
            "weights_hash": model().weights_hash(),
        }
        store = identity_store(folder / "original", identity)
        cached = _original_cache.get(json.dumps(identity, sort_keys=True))
        if cached:
            store.append([r for res in cached.values() for r in res.values() if store.missing([r.qid])])
        out = {k: score_questions(k[0], model, qs, ctx, store, "relearn original") for k, qs in questions.items()}
        _original_cache[json.dumps(identity, sort_keys=True)] = out
        return {**out, "_weights_hash": identity["weights_hash"]}

    def _attack(self, ctx, vlm, unlearned_hash, kind, mode, folds, params, questions, folder):
        """Per held-out fold: fine-tune on the other folds (attack) or on as many retain facts
        (control) in `mode`, answer the fold's forget questions in both modes; the attack also
        answers the questions of the profiles it trained on (did it relearn what it saw, and in
        the other mode?). Returns ({"held_out": results by (task, mode), "trained": the trained
        profiles' results by (task, mode), pooled over folds}, record)."""
        seed = ctx.cfg.seed
        pool = ctx.bench.fact_pairs("forget", mode)
        retain = ctx.bench.fact_pairs("retain", mode)
        results: dict = {k: {} for k in questions}
        trained: dict = {k: [] for k in questions}  # each question once per fold that trained on it
        record = []
        for k, held_out in enumerate(folds):
            train_pairs = [p for p in pool if p.profile_id not in held_out]
            if kind == "control":
                train_pairs = random.Random(f"relearn-control:{seed}:{k}").sample(
                    retain, min(len(retain), len(train_pairs))
                )
            identity = {
                "unlearned_weights_hash": unlearned_hash,
                "params": params.__dict__,
                "kind": kind,
                "mode": mode,
                "held_out": held_out,
                "seed": seed,
            }
            store = identity_store(folder / f"{kind}-{mode}-fold{k}", identity)
            holder: dict = {}

            def model(train_pairs=train_pairs, holder=holder, k=k):
                if "vlm" not in holder:
                    ctx.say(f"relearn: {kind} in {mode}, fold {k + 1}/{len(folds)} held out ({len(train_pairs)} facts)")
                    holder["vlm"], holder["report"] = attack(vlm, train_pairs, mode, params, seed + k)
                return holder["vlm"]

            for key, qs in questions.items():
                mine = [q for q in qs if q.profile_id in held_out]
                results[key].update(score_questions(key[0], model, mine, ctx, store, f"relearn {kind} {mode} fold {k}"))
                if kind == "attack":
                    seen = [q for q in qs if q.profile_id not in held_out]
                    desc = f"relearn {kind} {mode} fold {k} (trained profiles)"
                    trained[key] += score_questions(key[0], model, seen, ctx, store, desc).values()
            record.append({"held_out": held_out, "facts": len(train_pairs), **holder.get("report", {"reused": True})})
            holder.clear()
        return {"held_out": results, "trained": trained}, record

    @staticmethod
    def _metrics(tasks, unlearned, original, attacks, note) -> dict:
        out: dict = {"forget": {}}
        for key, (task, metric) in RELEARN_KEYS.items():
            if task not in tasks:
                continue
            for m in MODES:
                unl = _mean(task, metric, unlearned[task, m].values())
                if unl is None:  # this scorer did not run
                    continue
                cell: dict = {"metric": metric, "unlearned": unl, "questions_scored": len(unlearned[task, m])}
                cell["original"] = _mean(task, metric, original[task, m].values()) if original else None
                for r in MODES:
                    for kind, prefix in (("attack", ""), ("control", "control_")):
                        res = attacks.get(f"{kind}-{r}")
                        relearned = _mean(task, metric, res["held_out"][task, m].values()) if res else None
                        cell[f"{'relearned' if kind == 'attack' else 'control'}_from_{r}"] = relearned
                        cell[f"{prefix}recovery_from_{r}"] = recovery(cell["original"], unl, relearned)
                    # every question is trained on by K-1 folds' attacks, so the pooled mean weighs each
                    # equally: the same questions as original and unlearned
                    res = attacks.get(f"attack-{r}")
                    seen = _mean(task, metric, res["trained"][task, m]) if res and res["trained"][task, m] else None
                    cell[f"trained_from_{r}"] = seen
                    cell[f"trained_recovery_from_{r}"] = recovery(cell["original"], unl, seen)
                if note or not removed_enough(cell["original"], unl):
                    cell["note"] = note or NOT_DEFINED
                out["forget"].setdefault(key, {})[m] = cell
        return out
