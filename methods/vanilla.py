"""Vanilla: the model as loaded, no unlearning (the reference row of every leaderboard)."""

from __future__ import annotations

from mmunlearn.harness.core.contracts import Method, MethodResult, new_report, register_method


@register_method
class Vanilla(Method):
    """No unlearning: evaluate the model as it is."""

    name = "vanilla"
    seed_dependent = False

    def apply(self, vlm, data, params, seed):
        report = new_report(self, params, seed)
        report["changed"] = {"weights": "none", "system_prompt": "unchanged"}
        return MethodResult(vlm, report)
