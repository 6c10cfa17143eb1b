"""MMUnlearner (Huo et al., ACL Findings 2025, arXiv:2502.11051): gradient ascent restricted by weight saliency.

1. Saliency. For a dataset D, the per-parameter saliency is the mean squared gradient of the NLL
   (a diagonal Fisher estimate), taken, as in the authors' code, over batches::

       F_D(w) = mean over batches B of D of (d NLL(B) / d w)^2

2. Masks. A weight may be updated only if it matters more to the forget set than to what must be
   preserved::

       m(w) = [ (F_forget(w) + 1e-15) / (F_preserve(w) + 1e-15) >= threshold ]     (threshold = 1)

   vision mask (vision-tower weights):   preserve = retain VQA (retain image_text)
   language mask (language-model weights): preserve = text-only QA of every profile
                                          (forget + retain text_only) + retain VQA
   `masks` picks vision, language or both (the paper's ablation found the vision mask alone best;
   "both" is the full dual-constrained method). Weights outside the chosen tower(s), and the
   projector between the towers, are never updated.

3. Unlearning, full-parameter (no LoRA): each epoch walks the retain VQA batches; every
   len(retain)/len(forget) batches a forget batch is taken for a gradient *ascent* step whose
   gradient is multiplied by the mask, and every retain batch gives a plain (unmasked) NLL descent
   step on the same weights, as the authors' training script interleaves them. AdamW without
   weight decay (so a masked weight is not shrunk either), linear learning-rate decay, gradient
   norm clipped at 1 after masking, lr 1e-5 (the paper's value).

Several processes: the saliency batches are dealt out whole (a batch's gradient is squared, so a
batch is never split) and the sums all-reduced; each unlearning step's batch is split, every rank's
loss weighted by its share, and the gradients summed: the update one process makes (float sums
aside).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mmunlearn.harness.core import distributed
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.contracts import (
    Method,
    mean_answer_nll,
    MethodParams,
    MethodResult,
    UnlearnData,
    encode_pairs,
    new_report,
    register_method,
    stage,
)
from mmunlearn.harness.core.seeding import chunks, seed_everything

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

RATIO_EPS = 1e-15


def tower_parameters(model, towers) -> dict[str, torch.nn.Parameter]:
    """name -> parameter for every parameter under the given towers ("vision", "language")."""
    from mmunlearn.harness.core.neurons import tower_paths

    paths = tower_paths(model)
    prefixes = tuple(paths[t] + "." for t in towers)
    return {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}


def saliency(vlm, pairs, params: dict, batch_size: int, desc: str) -> dict:
    """F(w) = mean over batches of the squared gradient of the batch NLL, for every w in params."""
    import torch
    from mmunlearn.harness.core.progress import progress_bar

    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    batches = chunks(pairs, batch_size)
    for batch in progress_bar(distributed.shard(batches), desc=desc, leave=False):
        vlm.model.zero_grad(set_to_none=True)
        mean_answer_nll(vlm.model, encode_pairs(vlm, batch)).mean().backward()
        with torch.no_grad():
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.float() ** 2 / len(batches)
    vlm.model.zero_grad(set_to_none=True)
    for f in fisher.values():  # every rank's share of the batches
        distributed.all_reduce_sum_(f)
    return fisher


def saliency_mask(f_forget: dict, f_preserve: dict, threshold: float) -> dict:
    """m(w) = (F_forget + 1e-15) / (F_preserve + 1e-15) >= threshold, elementwise."""
    return {n: (f_forget[n] + RATIO_EPS) / (f_preserve[n] + RATIO_EPS) >= threshold for n in f_forget}


def preserve_pairs(data: UnlearnData, tower: str) -> list:
    """What a tower's mask protects: retain VQA; for the language model also all text-only QA."""
    if tower == "vision":
        return data.pairs("retain", ["image_text"])
    return data.pairs("forget", ["text_only"]) + data.pairs("retain", ["text_only", "image_text"])


@register_method
class MMUnlearner(Method):
    """Saliency-masked gradient ascent on forget, interleaved with retain descent steps."""

    name = "mmunlearner"

    @dataclass
    class Params(MethodParams):
        masks: Literal["vision", "language", "both"] = "both"
        threshold: float = 1.0
        lr: float = 1e-5
        epochs: int = 1
        batch_size: int = 4
        max_grad_norm: float = 1.0

        def validate(self):
            self.require("threshold", self.threshold > 0, "a number > 0")
            self.require("lr", self.lr > 0, "a number > 0")
            self.require("epochs", self.epochs >= 1, "an integer >= 1")
            self.require("batch_size", self.batch_size >= 1, "an integer >= 1")
            self.require("max_grad_norm", self.max_grad_norm > 0, "a number > 0")

    def apply(self, vlm, data: UnlearnData, params: Params, seed: int):
        seed_everything(seed)
        report = new_report(self, params, seed)
        towers = ("vision", "language") if params.masks == "both" else (params.masks,)
        forget = data.pairs("forget", ["image_text"])
        retain = data.pairs("retain", ["image_text"])
        for what, pairs in (("forget image_text", forget), ("retain image_text", retain)):
            if not pairs:
                raise ConfigError(f"method 'mmunlearner': no {what} pairs to unlearn with")
        model = vlm.model
        for p in model.parameters():
            p.requires_grad_(False)
        scope = tower_parameters(model, towers)
        for p in scope.values():
            p.requires_grad_(True)

        with stage(report, "saliency"):
            model.eval()
            f_forget = saliency(vlm, forget, scope, params.batch_size, "MMUnlearner saliency forget")
            mask = {}
            for tower in towers:
                names = tower_parameters(model, (tower,))
                f_preserve = saliency(
                    vlm,
                    preserve_pairs(data, tower),
                    names,
                    params.batch_size,
                    f"MMUnlearner saliency preserve ({tower})",
                )
                mask.update(saliency_mask({n: f_forget[n] for n in names}, f_preserve, params.threshold))
            del f_forget

        with stage(report, "unlearn"):
            logs = self._unlearn(vlm, scope, mask, forget, retain, params, seed)

        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        selected = {t: sum(int(mask[n].sum()) for n in tower_parameters(model, (t,))) for t in towers}
        total = {t: sum(p.numel() for p in tower_parameters(model, (t,)).values()) for t in towers}
        report["changed"] = {
            "weights": f"full-parameter, {params.masks} tower(s)",
            "masked_weights": selected,
            "masked_fraction": {t: round(selected[t] / max(total[t], 1), 4) for t in towers},
            **logs,
        }
        return MethodResult(vlm, report)

    def _unlearn(self, vlm, scope: dict, mask: dict, forget, retain, params: Params, seed: int) -> dict:
        """Masked ascent steps on forget interleaved with plain descent steps on retain."""
        import numpy as np
        import torch
        from mmunlearn.harness.core import checkpoints
        from mmunlearn.harness.core.progress import progress_bar

        model = vlm.model
        weights = list(scope.values())
        optim = torch.optim.AdamW(weights, lr=params.lr, weight_decay=0.0)
        rng = random.Random(seed)
        n_forget = -(-len(forget) // params.batch_size)
        n_retain = -(-len(retain) // params.batch_size)
        total_steps = (n_forget + n_retain) * params.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: max(0.0, 1 - s / total_steps))
        every = max(1, n_retain // n_forget)
        sums = {"forget_steps": 0, "retain_steps": 0, "forget_nll": 0.0, "retain_nll": 0.0}

        def step(batch, ascend: bool):
            mine = distributed.shard(batch)  # this rank's share; the whole batch in one process
            optim.zero_grad(set_to_none=True)
            nll_share = 0.0  # this rank's part of the batch's mean NLL (all of it in one process)
            if mine:
                loss = mean_answer_nll(model, encode_pairs(vlm, mine)).sum() / len(batch)
                (-loss if ascend else loss).backward()
                nll_share = loss.item()
            distributed.all_reduce_grads_(weights)
            if ascend:
                with torch.no_grad():
                    for n, p in scope.items():
                        if p.grad is not None:
                            p.grad.mul_(mask[n].to(p.grad.dtype))
            torch.nn.utils.clip_grad_norm_(weights, params.max_grad_norm)
            optim.step()
            sched.step()
            key = "forget" if ascend else "retain"
            sums[f"{key}_steps"] += 1
            checkpoints.step_finished(vlm, model, int(sums["forget_steps"] + sums["retain_steps"]))
            sums[f"{key}_nll"] += nll_share
            return nll_share

        model.train()
        for _ in range(params.epochs):
            f_order, r_order = list(forget), list(retain)
            rng.shuffle(f_order)
            rng.shuffle(r_order)
            f_batches = chunks(f_order, params.batch_size)
            bar = progress_bar(chunks(r_order, params.batch_size), desc="MMUnlearner unlearning", leave=False)
            for i, r_batch in enumerate(bar):
                if i % every == 0 and f_batches:
                    bar.set_postfix(forget_nll=f"{step(f_batches.pop(0), ascend=True):.3g}")
                step(r_batch, ascend=False)
            for f_batch in f_batches:  # more forget than retain batches: finish the forget pass
                step(f_batch, ascend=True)
        checkpoints.training_finished(vlm, model)
        # every rank's parts of the batch means, summed once after training
        totals = distributed.all_reduce_sum_numpy(np.array([sums["forget_nll"], sums["retain_nll"]]))
        sums["forget_nll"], sums["retain_nll"] = (float(t) for t in totals)
        return {
            "forget_steps": sums["forget_steps"],
            "retain_steps": sums["retain_steps"],
            "mean_forget_nll": sums["forget_nll"] / max(sums["forget_steps"], 1),
            "mean_retain_nll": sums["retain_nll"] / max(sums["retain_steps"], 1),
        }
