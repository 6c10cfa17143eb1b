"""KL-Min: ascend the forget NLL while keeping the retain predictions close to the vanilla model.

    L = -NLL(B_forget) + retain_weight * KL(vanilla || current) on B_retain

The KL is taken per next-token distribution and averaged over the retain batch's non-padding
positions. The vanilla model is the frozen pre-unlearning network (with LoRA: the same network
with its adapters switched off, so no copy is held).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmunlearn.harness.core.contracts import Method, mean_answer_nll, model_inputs, register_method
from mmunlearn.methods.training import RetainTrainParams, kl_to_reference, run_training_method


def kl_min_loss(weight: float):
    def loss(model, forget, retain, reference):
        f = mean_answer_nll(model, forget).mean()
        kl = kl_to_reference(model(**model_inputs(retain)).logits, reference(retain), retain["attention_mask"])
        return -f + weight * kl, {"forget_nll": f.item(), "retain_kl": kl.item()}

    return loss


@register_method
class KLMin(Method):
    """Gradient ascent on forget plus KL to the vanilla model on retain."""

    name = "kl_min"

    @dataclass
    class Params(RetainTrainParams):
        pass

    def apply(self, vlm, data, params: Params, seed):
        return run_training_method(
            self, vlm, data, params, seed, kl_min_loss(params.retain_weight), use_retain=True, use_reference=True
        )
