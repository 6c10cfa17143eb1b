"""Privacy of forgetting, per modality: can the forget profiles still be told from profiles the
model never saw, and do its truth ratios look like those of a model that never saw them?

1. Membership inference. The `membership` task's four scores (LOSS, ZLib, Min-K%, Min-K%++)
   of every forget generation question are the members; the same scores of the holdout
   profiles' questions (`--holdout`; the mini-bench's Holdout_Set) are the non-members. Per
   score and mode: AUC (1.0 = members recognisable, 0.5 = indistinguishable: the ideal) and
   privleak against the reference model's AUC when there is one, else against 0.5
   (metrics[...]["privleak_against"] says which).
2. Forget quality. The KS-test p-value between this model's forget-set truth ratios (the
   `truth_ratio` task's R) and those of a reference model that never saw the forget profiles
   (`--reference-model`; the embedded retain-only tiny LLaVA).

Without a holdout set, AUC and privleak are None with the note "not available: no holdout
set"; without a reference model, forget quality is None ("not available: no reference model")
and privleak is taken against 0.5. Every per-question score (this model's and the
reference's) is in samples.jsonl and reference/samples.jsonl, resumable like the run's own.

metrics["forget"][score][mode] = {auc, privleak, privleak_against, members_scored,
nonmembers_scored}; metrics["forget"]["forget_quality"][mode] = {ks_p, ks_stat, ...}.

Intervals (`intervals`): the AUCs by a stratified profile bootstrap (members' and non-members'
profiles resampled separately), privleak mapped from this model's AUC interval with the
reference AUC held fixed, forget quality none (a KS p-value is already a test).
"""

from __future__ import annotations

import json
from pathlib import Path

from mmunlearn.harness.core.bench import load_holdout
from mmunlearn.harness.core.contracts import SampleResult
from mmunlearn.harness.core.privacy import MIA_SCORES, auc, forget_quality, privleak
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.statistics import privleak_interval
from mmunlearn.harness.core.uncertainty import Bootstrap, no_interval
from mmunlearn.harness.core.stages import (
    Column,
    Stage,
    StageContext,
    StageOutput,
    identity_store,
    register_stage,
    score_questions,
)

NO_HOLDOUT = "not available: no holdout set"
NO_REFERENCE = "not available: no reference model"
REFERENCE_DIR = "reference"
_reference_cache: dict[tuple, dict[str, dict]] = {}  # one process scores a reference once (the demo)


def score(task_name: str, model, questions, ctx: StageContext, store) -> dict[str, SampleResult]:
    return score_questions(task_name, model, questions, ctx, store, f"privacy {task_name}")


def _scored(results: dict[str, SampleResult], key: str) -> tuple[list[float], list[str]]:
    """The scores _values keeps and each one's profile id (for a profile bootstrap)."""
    kept = [
        (float(v), r.profile_id)
        for r in results.values()
        if (v := r.scores.get(key)) is not None and not r.extra.get("excluded")
    ]
    return [v for v, _ in kept], [p for _, p in kept]


def _values(results: dict[str, SampleResult], key: str, where: str = "scores") -> list[float]:
    out = []
    for r in results.values():
        v = r.scores.get(key) if where == "scores" else r.extra.get(key)
        if v is not None and not r.extra.get("excluded"):
            out.append(float(v))
    return out


@register_stage
class PrivacyStage(Stage):
    name = "privacy"
    title = "Privacy: can the forget profiles still be told from never-seen ones?"
    keys = (*MIA_SCORES, "forget_quality")
    lower_means_known = ("privleak", "ks_p")
    reads = ("generation", "classification")
    columns = (
        *(Column("forget", s, "auc", 0.5, "AUC, forget vs holdout (0.5 ideal)") for s in MIA_SCORES),
        Column("forget", "mia_mink", "privleak", 0.0, "privleak of Min-K% (0 ideal)"),
        Column("forget", "forget_quality", "ks_p", 1.0, "forget quality, KS p vs reference (higher is better)"),
    )
    legend = (
        "AUC: members (forget) against non-members (holdout), 1.0 = recognisable, 0.5 = indistinguishable "
        "(best: closest to 0.5). privleak: 0 = as private as the reference, -100 = fully recognisable. "
        "Forget quality: KS p-value of forget truth ratios against the retain-only reference (higher is better)."
    )

    def fingerprint(self, cfg, display) -> dict:
        return {
            "holdout": display(cfg.holdout) if cfg.holdout else None,
            "reference_model": display(cfg.reference_model) if cfg.reference_model else None,
        }

    def run(self, ctx: StageContext) -> StageOutput:
        cfg, bench = ctx.cfg, ctx.bench
        holdout = load_holdout(cfg.holdout, bench) if cfg.holdout else None
        members = {m: ctx.select(bench.questions(sets=["forget"], tasks=["generation"], modes=[m])) for m in MODES}
        choices = {m: ctx.select(bench.questions(sets=["forget"], tasks=["classification"], modes=[m])) for m in MODES}
        nonmembers = {m: ctx.select(holdout.questions(["generation"], [m])) if holdout else [] for m in MODES}
        if holdout is None:  # no non-members: membership inference has nothing to compare against
            members = {m: [] for m in MODES}
        if not cfg.reference_model:  # forget quality compares two models' truth ratios
            choices = {m: [] for m in MODES}
        mine = self._scores(ctx.vlm, ctx, ctx.store, members, nonmembers, choices)
        ref = self._reference(ctx, members, nonmembers, choices, holdout) if cfg.reference_model else None
        metrics: dict = {"forget": {}}
        for m in MODES:
            for s in MIA_SCORES:
                metrics["forget"].setdefault(s, {})[m] = self._membership(mine[m], ref[m] if ref else None, s, holdout)
            metrics["forget"].setdefault("forget_quality", {})[m] = self._forget_quality(
                mine[m]["ratios"], ref[m]["ratios"] if ref else None
            )
        record = {
            "holdout": {"source": holdout.source, "fingerprint": holdout.fingerprint} if holdout else None,
            "reference_model": ref["_record"] if ref else None,
        }
        return StageOutput(metrics, record, evidence={"mine": mine, "ref": ref})

    def intervals(self, ctx: StageContext, output: StageOutput, boot: Bootstrap) -> dict:
        """AUC (this model's and the reference's): stratified profile bootstrap of the loss-like
        scores negated (privacy.auc's orientation); privleak: this model's AUC interval mapped
        through privleak with the reference AUC as a fixed number; KS figures: no interval."""
        mine, ref = output.evidence["mine"], output.evidence["ref"]
        cells = output.metrics["forget"]
        out: dict = {}

        def auc_interval(results: dict, s: str):
            x, px = _scored(results["members"], s)
            y, py = _scored(results["nonmembers"], s)
            return boot.auc([-v for v in x], px, [-v for v in y], py)

        for m in MODES:
            for s in MIA_SCORES:
                cell = cells[s][m]
                if cell.get("auc") is None:
                    continue  # not available: no interval
                a = auc_interval(mine[m], s)
                found = {"auc": a.to_dict()}
                a_ref = cell.get("reference_auc")
                if a_ref is not None and ref is not None:
                    found["reference_auc"] = auc_interval(ref[m], s).to_dict()
                found["privleak"] = privleak_interval(a, a_ref if a_ref is not None else 0.5).to_dict()
                out.setdefault(s, {})[m] = found
            fq = cells["forget_quality"][m]
            if fq.get("ks_p") is not None:
                n = len({r.profile_id for r in mine[m]["ratios"].values()})
                out.setdefault("forget_quality", {})[m] = {
                    "ks_p": no_interval(fq["ks_p"], "KS test p-value: already a test, no interval", n),
                    "ks_stat": no_interval(fq["ks_stat"], "KS statistic: the test's own statistic, no interval", n),
                }
        return {"forget": out}

    @staticmethod
    def _scores(model, ctx: StageContext, store, members, nonmembers, choices) -> dict:
        """Per mode: the membership results of members and non-members, the truth-ratio results."""
        return {
            m: {
                "members": score("membership", model, members[m], ctx, store),
                "nonmembers": score("membership", model, nonmembers[m], ctx, store),
                "ratios": score("truth_ratio", model, choices[m], ctx, store),
            }
            for m in MODES
        }

    @staticmethod
    def _membership(mine: dict, ref: dict | None, s: str, holdout) -> dict:
        if holdout is None:
            return {"auc": None, "privleak": None, "note": NO_HOLDOUT}
        a = auc(_values(mine["members"], s), _values(mine["nonmembers"], s))
        a_ref = auc(_values(ref["members"], s), _values(ref["nonmembers"], s)) if ref else None
        return {
            "auc": a,
            "privleak": privleak(a, a_ref if a_ref is not None else 0.5),
            "privleak_against": "reference" if a_ref is not None else "0.5",
            "reference_auc": a_ref,
            "members_scored": len(_values(mine["members"], s)),
            "nonmembers_scored": len(_values(mine["nonmembers"], s)),
        }

    @staticmethod
    def _forget_quality(mine: dict, ref: dict | None) -> dict:
        if ref is None:
            return {"ks_p": None, "ks_stat": None, "note": NO_REFERENCE}
        p, stat = forget_quality(_values(mine, "ratio", "extra"), _values(ref, "ratio", "extra"))
        return {"ks_p": p, "ks_stat": stat, "questions_scored": len(_values(mine, "ratio", "extra"))}

    def _reference(self, ctx: StageContext, members, nonmembers, choices, holdout) -> dict:
        """The reference model's results on the same questions, from reference/samples.jsonl (kept
        while the reference's weights and the benchmark are unchanged) or evaluated now."""
        from mmunlearn.harness.core.model import load_vlm

        cfg = ctx.cfg
        folder = Path(ctx.out) / REFERENCE_DIR
        vlm = load_vlm(cfg.reference_model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        identity = {
            "source": ctx.display(cfg.reference_model),
            "weights_hash": vlm.weights_hash(),
            "bench_fingerprint": ctx.bench.fingerprint,
            "holdout_fingerprint": holdout.fingerprint if holdout else None,
        }
        key = (json.dumps(identity, sort_keys=True), cfg.limit)
        store = identity_store(folder, identity, meta_name="reference.json")
        cached = _reference_cache.get(key)
        if cached is not None:  # scored earlier in this process: copy into this run's folder
            missing = [r for per in cached.values() for part in per.values() for r in part.values()]
            store.append([r for r in missing if store.missing([r.qid])])
        ctx.say(f"privacy: scoring the reference model {identity['source']}")
        out = self._scores(lambda: vlm, ctx, store, members, nonmembers, choices)
        _reference_cache[key] = out
        return {**out, "_record": identity}
