"""GA (gradient ascent): maximise the NLL of the forget answers.

    L = -(1/|B|) sum_{d in B_forget} NLL(d)       (NLL(d): mean over d's answer tokens)

Training set-up (LoRA, AdamW, lr, batch, epochs) is mmunlearn.methods.training's, MLLMU-Bench's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmunlearn.harness.core.contracts import Method, mean_answer_nll, register_method
from mmunlearn.methods.training import TrainParams, run_training_method


def ga_loss(model, forget, retain, reference):
    nll = mean_answer_nll(model, forget).mean()
    return -nll, {"forget_nll": nll.item()}


@register_method
class GradientAscent(Method):
    """Gradient ascent on the forget set."""

    name = "ga"

    @dataclass
    class Params(TrainParams):
        pass

    def apply(self, vlm, data, params: Params, seed):
        return run_training_method(self, vlm, data, params, seed, ga_loss)
