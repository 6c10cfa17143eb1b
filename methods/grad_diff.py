"""GradDiff (gradient difference): ascend the forget NLL while descending the retain NLL.

L = -NLL(B_forget) + retain_weight * NLL(B_retain)     (batch means of per-sample mean NLL)
"""

from __future__ import annotations

from dataclasses import dataclass

from mmunlearn.harness.core.contracts import Method, mean_answer_nll, register_method
from mmunlearn.methods.training import RetainTrainParams, run_training_method


def grad_diff_loss(weight: float):
    def loss(model, forget, retain, reference):
        f = mean_answer_nll(model, forget).mean()
        r = mean_answer_nll(model, retain).mean()
        return -f + weight * r, {"forget_nll": f.item(), "retain_nll": r.item()}

    return loss


@register_method
class GradDiff(Method):
    """Gradient ascent on forget plus gradient descent on retain."""

    name = "grad_diff"

    @dataclass
    class Params(RetainTrainParams):
        pass

    def apply(self, vlm, data, params: Params, seed):
        return run_training_method(self, vlm, data, params, seed, grad_diff_loss(params.retain_weight), use_retain=True)
