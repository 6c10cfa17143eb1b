"""The one training loop the gradient-based baselines share (GA, GradDiff, KL-Min, NPO).

Set-up as MLLMU-Bench ran its baselines: LoRA r=16, alpha=16, dropout 0.05 on every linear layer
of the *language model* (found structurally: the module that owns the input embeddings; the
vision tower, projector and lm_head are left alone), AdamW, lr 2e-5, batch 4, 1 epoch, forget
data in image+text form. `finetune="full"` trains every parameter of the model instead. At the
end the LoRA update is merged into the weights, so every method hands back a plain model that
evaluates, saves and prunes like the original.

A method supplies only its loss: `loss_fn(model, forget_batch, retain_batch, reference)` returns
(loss, {"term": float}); `reference(batch)` gives the frozen pre-unlearning model's logits. The
loop shuffles with the seed, walks the forget pairs in batches once per epoch and draws one retain
batch per step from a seeded cycle over the retain pairs (when the method asks for them).

NLL convention (harness.core.contracts): `answer_nll` returns, per sample, the *sum* of the answer tokens' negative log
likelihood and the number of answer tokens; GA-type losses use the per-sample *mean* (so long
answers do not dominate), NPO uses the sum (the sequence log-likelihood, as in the NPO paper).
"""

from __future__ import annotations

import copy
from collections import Counter
import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.contracts import (
    MethodParams,
    MethodResult,
    UnlearnData,
    encode_pairs,
    model_inputs,
    new_report,
    stage,
)
from mmunlearn.harness.core.seeding import chunks, seed_everything

Mode = Literal["image_text", "text_only"]


@dataclass
class TrainParams(MethodParams):
    """Training settings shared by the gradient baselines (MLLMU-Bench defaults)."""

    lr: float = 2e-5
    epochs: int = 1
    batch_size: int = 4
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    weight_decay: float = 0.01  # torch AdamW default
    forget_modes: tuple[Mode, ...] = ("image_text",)

    def validate(self):
        self.require("lr", self.lr > 0, "a number > 0")
        self.require("epochs", self.epochs >= 1, "an integer >= 1")
        self.require("batch_size", self.batch_size >= 1, "an integer >= 1")
        self.require("lora_r", self.lora_r >= 1, "an integer >= 1")
        self.require("lora_alpha", self.lora_alpha > 0, "an integer > 0")
        self.require("lora_dropout", 0 <= self.lora_dropout < 1, "a number in [0, 1)")
        self.require("weight_decay", self.weight_decay >= 0, "a number >= 0")
        self.require(
            "forget_modes",
            len(self.forget_modes) > 0 and len(set(self.forget_modes)) == len(self.forget_modes),
            "image_text, text_only or image_text,text_only",
        )


@dataclass
class RetainTrainParams(TrainParams):
    """Training settings of the methods that also look at the retain set."""

    retain_modes: tuple[Mode, ...] = ("image_text",)
    retain_weight: float = 1.0

    def validate(self):
        super().validate()
        self.require(
            "retain_modes",
            len(self.retain_modes) > 0 and len(set(self.retain_modes)) == len(self.retain_modes),
            "image_text, text_only or image_text,text_only",
        )
        self.require("retain_weight", self.retain_weight >= 0, "a number >= 0")


# ----------------------------------------------------------------------------- losses


def kl_to_reference(logits, ref_logits, attention_mask):
    """KL(reference || current) per next-token distribution, averaged over non-padding positions."""
    import torch.nn.functional as F

    cur = F.log_softmax(logits.float(), -1)
    ref = F.log_softmax(ref_logits.float(), -1)
    kl = F.kl_div(cur, ref, log_target=True, reduction="none").sum(-1)
    mask = attention_mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


# ----------------------------------------------------------------------------- model set-up


def language_model_prefix(model) -> str:
    """Module path of the language model: the module whose direct child is the input embedding."""
    emb = model.get_input_embeddings()
    for name, module in model.named_modules():
        if any(child is emb for child in module.children()):
            return name
    raise ConfigError(f"cannot find the language model of {type(model).__name__} (no module owns its input embeddings)")


def language_linear_modules(model) -> list[str]:
    """Full names of every nn.Linear inside the language model (the LoRA targets)."""
    import torch.nn as nn

    prefix = language_model_prefix(model) + "."
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith(prefix)]


def prepare_trainable(model, params: TrainParams):
    """LoRA-wrap the language model's linear layers (or unfreeze everything); returns the model to train."""
    if params.finetune == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=language_linear_modules(model),
        bias="none",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)  # LoRA init draws from the seeded global RNG


def finish_trainable(trained, params: TrainParams):
    """Merge LoRA back into the weights; return a plain, frozen model in eval mode."""
    model = trained.merge_and_unload() if params.finetune == "lora" else trained
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def make_reference(trained, params: TrainParams, ref_model=None) -> Callable:
    """reference(batch) -> logits of the model as it was before unlearning (no gradients).

    With LoRA the reference is the same network with the adapters switched off (no copy);
    with full fine-tuning a frozen copy is made now; `ref_model` (a loaded model) overrides both.
    """
    import torch

    if ref_model is None and params.finetune == "full":
        ref_model = copy.deepcopy(trained).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def reference(batch):
        if ref_model is not None:
            return ref_model(**model_inputs(batch)).logits
        with trained.disable_adapter():
            return trained(**model_inputs(batch)).logits

    return reference


# ----------------------------------------------------------------------------- the loop


def cycle(items: list, rng: random.Random):
    """Endless seeded reshuffled passes over items."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


def steps(forget: list, retain: list | None, batch_size: int, epochs: int, seed: int):
    """(forget_pairs, retain_pairs | None) per step: seeded shuffles, one retain batch per forget batch."""
    rng = random.Random(seed)
    retain_stream = cycle(retain, random.Random(seed + 1)) if retain else None
    for epoch in range(epochs):
        order = list(forget)
        rng.shuffle(order)
        for batch in chunks(order, batch_size):
            r = [next(retain_stream) for _ in range(batch_size)] if retain_stream else None
            yield epoch, batch, r


def key_sums(parts: Iterable[dict]) -> dict[str, float]:
    """Key-wise sum of dicts of numbers (the ranks' share-weighted loss terms of one epoch)."""
    total: Counter = Counter()
    for part in parts:
        total.update(part)  # adds values, negative ones included (unlike Counter's +)
    return dict(total)


def train(
    vlm,
    data: UnlearnData,
    params: TrainParams,
    seed: int,
    loss_fn,
    *,
    method: str,
    use_retain: bool = False,
    use_reference: bool = False,
    ref_model=None,
    max_steps: int | None = None,
) -> dict:
    """Run the shared loop with `loss_fn`; vlm.model is replaced by the unlearned plain model.
    `max_steps` stops after that many optimiser steps (a budget in steps, e.g. a relearning
    attack's). Each finished step, and the end of training, is reported to harness.core.checkpoints
    (the checkpoint sweep).

    Returns the report: trainable parameters, steps, per-epoch mean of each loss term, seconds.
    """
    import torch
    from mmunlearn.harness.core import checkpoints, distributed
    from mmunlearn.harness.core.progress import progress_bar

    seed_everything(seed)
    report: dict[str, Any] = {"seconds": {}}
    forget = data.pairs("forget", params.forget_modes)
    if not forget:
        raise ConfigError(f"method {method!r}: no forget pairs in modes {', '.join(params.forget_modes)}")
    retain = None
    if use_retain:
        if not isinstance(params, RetainTrainParams):
            raise TypeError(f"method {method!r}: use_retain needs RetainTrainParams, got {type(params).__name__}")
        retain = data.pairs("retain", params.retain_modes)
        if not retain:
            raise ConfigError(f"method {method!r}: no retain pairs in modes {', '.join(params.retain_modes)}")
    with stage(report, "setup"):
        trained = prepare_trainable(vlm.model, params)
        reference = make_reference(trained, params, ref_model) if use_reference else None
        trainable = [p for p in trained.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    plan = list(steps(forget, retain, params.batch_size, params.epochs, seed))[:max_steps]
    sums: dict[int, dict[str, float]] = {}
    with stage(report, "train"):
        trained.train()
        bar = progress_bar(plan, desc=f"{method} unlearning", leave=False)
        for step_no, (epoch, f_pairs, r_pairs) in enumerate(bar, 1):
            # Multi-process: each rank takes its share of the batch, its loss weighted by that share,
            # and the gradients are summed: the update one process makes on the whole batch (DDP).
            f_mine = distributed.shard(f_pairs)
            r_mine = distributed.shard(r_pairs) if r_pairs else None
            optim.zero_grad(set_to_none=True)
            share = len(f_mine) / len(f_pairs)
            if f_mine:
                f_batch = encode_pairs(vlm, f_mine)
                r_batch = encode_pairs(vlm, r_mine) if r_mine else None
                loss, logs = loss_fn(trained, f_batch, r_batch, reference)
                (loss * share).backward()
            else:
                logs = {}
            distributed.all_reduce_grads_(trainable)
            optim.step()
            checkpoints.step_finished(vlm, trained, step_no)
            acc = sums.setdefault(epoch, {})
            for k, v in logs.items():  # weighted as the loss: summed over ranks, the whole batch's terms
                acc[k] = acc.get(k, 0.0) + float(v) * share
            bar.set_postfix({k: f"{float(v):.3g}" for k, v in logs.items()})
        checkpoints.training_finished(vlm, trained)
    with stage(report, "merge"):
        vlm.model = finish_trainable(trained, params)
    report["changed"] = {
        "weights": "language model (LoRA merged)" if params.finetune == "lora" else "all parameters",
        "trainable_parameters": sum(p.numel() for p in trainable),
        "steps": len(plan),
        "forget_pairs": len(forget),
        "retain_pairs": len(retain or []),
    }
    n_steps = Counter(epoch for epoch, _, _ in plan)
    epochs = sorted(n_steps)
    per_rank = distributed.gather_objects([sums.get(e, {}) for e in epochs])  # one collective, after training
    report["loss_by_epoch"] = [
        {"steps": n_steps[e], **{k: v / n_steps[e] for k, v in key_sums(parts).items()}}
        for e, parts in zip(epochs, zip(*per_rank))
    ]
    return report


def run_training_method(method, vlm, data, params, seed, loss_fn, **kwargs):
    """apply() body of a training method: the shared loop plus the standard report."""
    report = new_report(method, params, seed)
    report.update(train(vlm, data, params, seed, loss_fn, method=method.name, **kwargs))
    return MethodResult(vlm, report)
