"""NPO (negative preference optimisation) on the forget set.

    L = -(2/beta) * mean_{d in B_forget} logsigmoid(-beta * (log p_cur(d) - log p_ref(d)))

log p(d) is the sequence log-likelihood of d's answer (sum over its tokens). beta = 0.4 as in
MLLMU-Bench's code (the MANU paper used 0.9). The reference is the vanilla model (cheap default;
with LoRA the adapters are switched off, no copy) or, as the NPO paper and MANU did, a model
fine-tuned on the retain set: pass its path as `ref_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmunlearn.harness.core.contracts import Method, answer_nll, model_inputs, register_method
from mmunlearn.methods.training import TrainParams, run_training_method


def npo_loss(beta: float):
    import torch.nn.functional as F

    def loss(model, forget, retain, reference):
        nll_cur, _ = answer_nll(model(**model_inputs(forget)).logits, forget["labels"])
        nll_ref, _ = answer_nll(reference(forget), forget["labels"])
        log_ratio = nll_ref - nll_cur  # log p_cur - log p_ref
        npo = -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
        return npo, {"npo": npo.item(), "forget_seq_nll": nll_cur.mean().item()}

    return loss


@register_method
class NPO(Method):
    """Negative preference optimisation against a frozen reference model."""

    name = "npo"

    @dataclass
    class Params(TrainParams):
        beta: float = 0.4
        ref_model: str | None = None  # path of a retain-fine-tuned reference; None = vanilla

        def validate(self):
            super().validate()
            self.require("beta", self.beta > 0, "a number > 0")

    def apply(self, vlm, data, params: Params, seed):
        ref = None
        if params.ref_model:
            from mmunlearn.harness.core.model import load_vlm

            ref = load_vlm(params.ref_model, device=vlm.device, dtype=vlm.dtype).model.eval()
            for p in ref.parameters():
                p.requires_grad_(False)
        result = run_training_method(
            self, vlm, data, params, seed, npo_loss(params.beta), use_reference=True, ref_model=ref
        )
        result.report["reference"] = params.ref_model or "vanilla"
        return result
