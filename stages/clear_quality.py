"""CLEAR's aggregate figures (the official mm/calculate_metrics.py and the paper tables of
mm/build_vllm_table.py), read from the `clear` protocol's per-question results:

- forget quality: the forget captions' per-question truth ratios against a gold model's on the
  same questions (one that never saw the forget persons: `--reference-model`, a model or a
  finished run folder of one), as the KS-test p-value (`forget_quality_ks`) and as 1 - the
  Jensen-Shannon distance (`forget_quality_js`, the paper tables' "Forget Quality"); each
  model's truth ratios pooled over its own file as the official code pools them;
- model utility: the harmonic mean of every retain and real figure (probability, truth ratio,
  ROUGE-L recall of retain captions, retain face recognition, real faces, real world);
- the paper tables' Forget / Retain / Real: harmonic means of probability and truth ratio of
  the forget, retain and real tasks.

All image+text (CLEAR's truth ratios exist for the image rows only). No interval: the KS figure is
already a test, and the harmonic means are of figures that have their own.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmunlearn.harness.core.contracts import SampleResult
from mmunlearn.harness.core.stages import (
    Column,
    Stage,
    StageContext,
    StageOutput,
    identity_store,
    register_stage,
    score_questions,
)
from mmunlearn.harness.core.tofu_metrics import (
    Averaging,
    forget_quality_js,
    forget_quality_ks,
    model_utility,
    truth_ratios,
)

KEY = "clear_aggregate"
REFERENCE_DIR = "reference"
NO_REFERENCE = "not available: no gold model (--reference-model)"
IT = "image_text"
# (set, task) whose probability and truth ratio enter each paper-table harmonic mean
GROUPS = {
    "forget": (("forget", "clear_caption"), ("forget", "clear_face")),
    "retain": (("retain", "clear_caption"), ("retain", "clear_face")),
    "real": (("real", "clear_face"), ("real", "clear_vqa")),
}


def pooled_ratios(results: dict[str, SampleResult], averaging: Averaging = "pooled") -> dict[str, float]:
    """qid -> truth ratio of every scored question, the perturbed NLL pooled over the file."""
    kept = [(qid, r) for qid, r in results.items() if r.extra.get("paraphrased_loss") is not None]
    if not kept:
        return {}
    tr = truth_ratios(
        [r.extra["paraphrased_loss"] for _, r in kept], [r.extra["perturbed_losses"] for _, r in kept], averaging
    )
    return {qid: float(v) for (qid, _), v in zip(kept, tr)}


def _hmean(values: list) -> float | None:
    """The harmonic mean of every figure, or None when one is missing (a subset is another figure)."""
    return model_utility(values) if values and all(v is not None for v in values) else None


@register_stage
class ClearAggregateStage(Stage):
    name = "clear_forget_quality"
    title = "CLEAR: forget quality against a gold model, model utility, the paper table's harmonic means"
    keys = (KEY,)
    lower_means_known = ("forget_quality_ks", "forget_quality_js")
    reads = ("caption", "face", "vqa")
    columns = (
        Column("forget", KEY, "forget_quality_js", 1.0, "forget quality, 1 - JS vs the gold model (higher is better)"),
        Column("forget", KEY, "forget_quality_ks", 1.0, "forget quality, KS p vs the gold model (higher is better)"),
        Column("retain", KEY, "model_utility", None, "model utility, harmonic mean of retain and real figures"),
    )
    legend = (
        "Forget quality: forget-caption truth ratios against a gold model that never saw the forget persons "
        "(1 - JS as in CLEAR's tables; KS p-value as in TOFU). Model utility: harmonic mean of the retain and "
        "real probability, truth ratio and ROUGE-L recall."
    )

    def fingerprint(self, cfg, display) -> dict:
        return {"reference_model": display(cfg.reference_model) if cfg.reference_model else None}

    def run(self, ctx: StageContext) -> StageOutput:
        forget_qs = ctx.select(ctx.bench.questions(sets=["forget"], tasks=["caption"], modes=[IT]))
        averaging = ctx.bench.options.get("truth_ratio_averaging", "pooled")
        mine = score_questions("clear_caption", ctx.vlm, forget_qs, ctx, ctx.store, "forget quality")
        gold, record = self._gold(ctx, forget_qs)
        quality: dict = {"forget_quality_ks": None, "forget_quality_js": None}
        if gold is None:
            quality["note"] = NO_REFERENCE
        else:
            # the same questions on both sides before each file pools its perturbed loss, so JS
            # compares the two files row by row
            common = [q for q in mine if q in gold and mine[q].extra.get("paraphrased_loss") is not None]
            a = pooled_ratios({q: mine[q] for q in common}, averaging)
            b = pooled_ratios({q: gold[q] for q in common}, averaging)
            if common:
                left, right = [a[q] for q in common], [b[q] for q in common]
                quality = {
                    "forget_quality_ks": forget_quality_ks(left, right),
                    "forget_quality_js": forget_quality_js(left, right),
                }
            quality["questions_scored"] = len(common)
        figures: dict[str, dict] = {s: {} for s in GROUPS}
        for group, cells in GROUPS.items():
            values = []
            for set_name, task in cells:
                cell = ctx.metrics.get(set_name, {}).get(task, {}).get(IT) or {}
                tr = cell.get("truth_ratio_min" if set_name == "forget" else "truth_ratio_keep")
                values += [cell.get("prob"), tr]
            figures[group][group] = _hmean(values)
        utility = []
        for set_name, task in GROUPS["retain"] + GROUPS["real"]:
            cell = ctx.metrics.get(set_name, {}).get(task, {}).get(IT) or {}
            utility += [cell.get("prob"), cell.get("truth_ratio_keep"), cell.get("rougeL_recall")]
        figures["retain"]["model_utility"] = _hmean(utility)
        figures["forget"].update(quality)
        metrics = {s: {KEY: {IT: v}} for s, v in figures.items() if s in ctx.cfg.sets}
        return StageOutput(metrics, {"reference_model": record})

    def _gold(self, ctx: StageContext, questions) -> tuple[dict | None, dict | None]:
        """The gold model's clear_caption results on the forget captions: read from a finished
        run folder, or scored now with the model (kept in reference/ while it is unchanged)."""
        source = ctx.cfg.reference_model
        if not source:
            return None, None
        folder = Path(source)
        if (folder / "results.json").is_file():  # a stored gold run: its per-question answers
            from mmunlearn.harness.core.results import SampleStore

            from mmunlearn.harness.core.contracts import get_task

            store, task = SampleStore(folder), get_task("clear_caption")
            found = {q.qid: store.get(task.sample_id(q)) for q in questions}
            return (
                {qid: SampleResult.from_dict(r) for qid, r in found.items() if r is not None},
                {"run": ctx.display(str(folder)), "questions_found": sum(r is not None for r in found.values())},
            )
        from mmunlearn.harness.core.model import load_vlm

        cfg = ctx.cfg
        vlm = load_vlm(source, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        identity = {
            "source": ctx.display(source),
            "weights_hash": vlm.weights_hash(),
            "bench_fingerprint": ctx.bench.fingerprint,
        }
        store = identity_store(Path(ctx.out) / REFERENCE_DIR, identity, meta_name="reference.json")
        ctx.say(f"clear: scoring the gold model {identity['source']}")
        return score_questions("clear_caption", lambda: vlm, questions, ctx, store, "gold model"), json.loads(
            json.dumps(identity)
        )
