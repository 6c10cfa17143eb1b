"""Prompting: no weight change; a system prompt asks the model not to reveal personal information.

The MANU paper's in-context baseline. Every request the VLM builds afterwards carries the prompt
(VLM.system_prompt), in both input modes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmunlearn.harness.core.prompts import PROMPTING_SYSTEM_PROMPT
from mmunlearn.harness.core.contracts import Method, MethodParams, MethodResult, new_report, register_method


@register_method
class Prompting(Method):
    """System prompt telling the model not to reveal personal information; weights untouched."""

    name = "prompting"
    seed_dependent = False

    @dataclass
    class Params(MethodParams):
        system_prompt: str = PROMPTING_SYSTEM_PROMPT

        def validate(self):
            self.require("system_prompt", bool(self.system_prompt.strip()), "a non-empty text")

    def apply(self, vlm, data, params: Params, seed):
        report = new_report(self, params, seed)
        report["changed"] = {"weights": "none", "system_prompt": params.system_prompt}
        return MethodResult(vlm, report, system_prompt=params.system_prompt)
