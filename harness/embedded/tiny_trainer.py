"""Train the embedded tiny LLaVA (`mmunlearn train-tiny`) and score it.

Why one loop of our own: every step sums an answer loss on one text-only batch and one image
batch (the two modalities compete for a tiny language model; separate optimiser steps per
modality failed), and a run must survive being killed (its state is saved and resumed). The
final scores go through the harness's own task registry, the one scoring path.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

import torch

from mmunlearn.harness.core.contracts import mean_answer_nll
from mmunlearn.harness.core.prompts import Request, user_text
from mmunlearn.harness.core.records import MODES, ImageDecoder, Question
from mmunlearn.harness.core.results import atomic_file
from mmunlearn.harness.core.seeding import seed_everything
from mmunlearn.harness.embedded.tiny_data import (
    CHECK_SETS,
    Item,
    Sample,
    check_questions,
    to_request,
    training_items,
)
from mmunlearn.harness.embedded.tiny_recipe import SKILLS_RECIPE, Recipe, TinyConfig, build_tiny_llava


# ----------------------------------------------------------------------------- checking


@torch.no_grad()
def first_token_accuracy(vlm, questions: list[Question], images: ImageDecoder, batch: int = 64) -> float:
    """Share of questions whose greedy first answer token is the right letter (official zero-shot
    prompt). One forward pass per batch: the greedy first token is the arg-max at the last prompt
    position, so this equals generate()'s first character without decoding 50 tokens."""
    if not questions:
        return float("nan")
    was_training = vlm.model.training
    vlm.model.eval()
    correct = 0
    for i in range(0, len(questions), batch):
        chunk = questions[i : i + batch]
        reqs = [
            Request(user_text("classification", q.mode, q.text, q.options), images(q.image), task="classification")
            for q in chunk
        ]
        logits = vlm.model(**vlm.encode(reqs)).logits[:, -1]
        for q, tok in zip(chunk, logits.argmax(-1).tolist()):
            correct += vlm.tokenizer.decode([tok]).strip()[:1] == q.answer
    vlm.model.train(was_training)
    return correct / len(questions)


def evaluate(
    vlm, bench, sets: Iterable[str] = CHECK_SETS, batch_size: int = 64, limit: int | None = None, shots: int | str = 0
) -> dict:
    """Score the model with the harness's own tasks (one scoring path): official letter
    accuracy, cloze accuracy and generation ROUGE-L per set and mode. `limit` caps questions
    per (set, task, mode); `shots` as the run's --shots (default zero-shot)."""
    from mmunlearn.harness.core.contracts import get_task
    from mmunlearn.harness.core.contracts import TaskContext

    ctx = TaskContext(shots=shots, bench=bench, batch_size=batch_size)
    headline = {"classification": "accuracy", "cloze": "accuracy", "generation": "rougeL"}
    out: dict = {}
    for s in sets:
        for task, metric in headline.items():
            for mode in MODES:
                qs = bench.questions(sets=s, tasks=task, modes=mode)[:limit]
                agg = get_task(task).aggregate(get_task(task).evaluate(vlm, qs, ctx)) if qs else {metric: None, "n": 0}
                value = agg[metric]
                out.setdefault(s, {}).setdefault(task, {})[mode] = {
                    metric: None if value is None else round(float(value), 4),
                    "n": agg["n"],
                }
    return out


# ----------------------------------------------------------------------------- training


def parameter_groups(model, recipe: Recipe) -> list[dict]:
    """The optimiser's parameter groups: the vision side (tower and projector) at
    `recipe.vision_lr` when set, so a new visual skill can be learned faster than the language
    model's facts and letters move; everything at `recipe.peak_lr` otherwise."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if recipe.vision_lr is None:
        return [{"params": [p for _, p in named], "lr": recipe.peak_lr}]
    vision = [p for n, p in named if "vision_tower" in n or "multi_modal_projector" in n]
    language = [p for n, p in named if not ("vision_tower" in n or "multi_modal_projector" in n)]
    return [{"params": language, "lr": recipe.peak_lr}, {"params": vision, "lr": recipe.vision_lr}]


class Trainer:
    """The training loop; small enough to read top to bottom.

    Each step: one text-only batch and one image batch, drawn by the phase's mix (Recipe.mix),
    their per-item answer losses summed (a one-letter answer weighs as much as a sentence).
    State (model, optimiser, schedule, RNGs, step) is saved to `state_path` every `save_every`
    steps and restored on start, so a killed run resumes where it stopped.
    """

    def __init__(
        self,
        bench,
        vlm,
        recipe: Recipe,
        seed: int,
        state_path: Path | None = None,
        save_every: int = 200,
        log: Callable[[str], None] = print,
        extra_items: Iterable[Item] = (),
    ):
        self.bench, self.vlm, self.recipe, self.seed = bench, vlm, recipe, seed
        self.state_path, self.save_every, self.log = state_path, save_every, log
        self.rng = random.Random(seed)
        self.images = ImageDecoder()
        self.pool: dict[tuple[str, str], list[Item]] = defaultdict(list)  # (batch, kind) -> items
        for item in [*training_items(bench, recipe.train_sets(), recipe.examples_share), *extra_items]:
            self.pool["text" if item.mode == "text_only" else "image", item.kind].append(item)
        self.checks = check_questions(bench, recipe.check_per_group, seed)
        groups = parameter_groups(vlm.model, recipe)
        self.optimizer = torch.optim.AdamW(groups, lr=recipe.peak_lr, weight_decay=recipe.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=[g["lr"] for g in groups],
            total_steps=max(recipe.steps, 1),
            pct_start=recipe.warmup_fraction,
        )
        self.step = 0
        self.history: list[dict] = []
        self.seconds = 0.0

    def phase(self) -> str:
        r = self.recipe
        if self.step < r.steps * r.facts_until:
            return "facts"
        return "binding" if self.step < r.steps * r.binding_until else "all"

    def draw(self, batch: str, size: int) -> list[Item]:
        """`size` items for the text or image batch, by the current phase's mix."""
        mix = {k: w for k, w in self.recipe.mix(self.phase(), batch).items() if self.pool[batch, k]}
        kinds = self.rng.choices(list(mix), weights=list(mix.values()), k=size)
        return [self.rng.choice(self.pool[batch, k]) for k in kinds]

    def batch_loss(self, items: list[Item]) -> torch.Tensor:
        """Mean over items of each item's mean answer-token NLL (prompt tokens masked). Items with
        in-context examples (hundreds of tokens) go through their own forward pass, so the short
        ones are not padded to their length."""
        samples = [item.render(self.rng) for item in items]
        total: torch.Tensor | float = 0.0
        for group in ([s for s in samples if not s.examples], [s for s in samples if s.examples]):
            if group:
                total = total + self.item_losses(group).sum()
        if not isinstance(total, torch.Tensor):
            raise ValueError("batch_loss needs at least one item")
        return total / len(samples)

    def item_losses(self, samples: list[Sample]) -> torch.Tensor:
        """Each sample's mean answer-token NLL."""
        enc = self.vlm.encode([to_request(s, self.images) for s in samples], [s.answer for s in samples])
        return mean_answer_nll(self.vlm.model, enc)

    def train_step(self) -> dict[str, float]:
        r = self.recipe
        self.vlm.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = {}
        for batch, size, weight in (("text", r.batch_text, 1.0), ("image", r.batch_image, r.image_weight)):
            if size <= 0:
                continue
            loss = self.batch_loss(self.draw(batch, size))
            (weight * loss).backward()
            losses[batch] = loss.item()
        torch.nn.utils.clip_grad_norm_(self.vlm.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        return losses

    def check(self) -> dict[str, float]:
        """Official letter accuracy (first greedy token, zero-shot) per set/mode on the check sample."""
        return {
            f"{s}/{m}": round(first_token_accuracy(self.vlm, qs, self.images), 3) for (s, m), qs in self.checks.items()
        }

    def save_state(self) -> None:
        if self.state_path is None:
            return
        with atomic_file(self.state_path) as fh:
            torch.save(
                {
                    "step": self.step,
                    "seed": self.seed,
                    "recipe": asdict(self.recipe),
                    "history": self.history,
                    "seconds": self.seconds,
                    "model": self.vlm.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "schedule": self.schedule.state_dict(),
                    "rng": self.rng.getstate(),
                    "torch_rng": torch.get_rng_state(),
                },
                fh,
            )

    def load_state(self) -> bool:
        """Resume from `state_path` when it holds a run with the same seed and recipe (loaded
        with weights_only=True: a state file cannot run code)."""
        if self.state_path is None or not self.state_path.exists():
            return False
        state = torch.load(self.state_path, weights_only=True, map_location="cpu")
        if state["seed"] != self.seed or state["recipe"] != asdict(self.recipe):
            self.log(f"ignoring {self.state_path}: it was saved for another seed or recipe")
            return False
        self.vlm.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.rng.setstate(_as_tuple(state["rng"]))
        torch.set_rng_state(state["torch_rng"])
        self.step, self.history, self.seconds = state["step"], state["history"], state["seconds"]
        self.log(f"resumed at step {self.step}")
        return True

    def run(self, progress: bool = True, max_seconds: float | None = None) -> list[dict]:
        """Train to `recipe.steps` (or until `max_seconds` of this call have passed: the state is
        saved, and the next call resumes)."""
        from mmunlearn.harness.core.progress import progress_bar

        r = self.recipe
        bar = progress_bar(total=r.steps, initial=self.step, desc="train-tiny", disable=not progress)
        running: dict[str, float] = {}
        call_start = time.perf_counter()
        start = call_start - self.seconds
        while self.step < r.steps:
            losses = self.train_step()
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in losses.items()}
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
            self.seconds = time.perf_counter() - start
            if self.step % r.check_every == 0 or self.step == r.steps:
                acc = self.check()
                self.history.append(
                    {
                        "step": self.step,
                        "phase": self.phase(),
                        "seconds": round(self.seconds, 1),
                        "loss": {k: round(v, 4) for k, v in running.items()},
                        "accuracy": acc,
                    }
                )
                self.log(json.dumps(self.history[-1]))
            if self.step % self.save_every == 0:
                self.save_state()
            if max_seconds is not None and time.perf_counter() - call_start > max_seconds:
                self.save_state()
                break
        bar.close()
        return self.history


def _as_tuple(value):
    """random.Random state read back from a weights_only torch file (tuples may come back as lists)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_trained(vlm, bench, out: Path, trainer: Trainer, evaluate_limit: int | None, head: dict) -> dict:
    """Save a finished training into `out` (float16, half the size; loads as float32 on CPU),
    evaluate the weights exactly as saved, write training.json (`head`, then times, history and
    the final evaluation) and drop the resumable state."""
    vlm.model.eval()
    vlm.model.to("cpu", torch.float16)
    vlm.save(out)
    vlm.model.float()
    eval_start = time.perf_counter()
    final = evaluate(vlm, bench, limit=evaluate_limit)
    record = {
        **head,
        "train_seconds": round(trainer.seconds, 1),
        "eval_seconds": round(time.perf_counter() - eval_start, 1),
        "history": trainer.history,
        "final": final,
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    if trainer.state_path is not None and trainer.state_path.exists():
        trainer.state_path.unlink()
    return record


def train_tiny(
    bench,
    out: str | Path,
    seed: int = 0,
    recipe: Recipe = Recipe(),
    config: TinyConfig = TinyConfig(),
    evaluate_limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    max_seconds: float | None = None,
) -> dict | None:
    """Build the tiny LLaVA, train it and save it into `out` with its training.json record.

    With `max_seconds`, stops after that long with the state saved in out/train_state.pt and
    returns None; calling again with the same arguments resumes.
    """
    from mmunlearn.harness.core.model import wrap_vlm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.threads)
    torch.set_flush_denormal(True)  # denormals make CPU matmuls very slow late in training
    seed_everything(seed)
    model, processor = build_tiny_llava(bench, config, seed)
    model.to(recipe.device)
    vlm = wrap_vlm(model, processor, source=str(out))
    state_path = out / "train_state.pt"
    trainer = Trainer(bench, vlm, recipe, seed, state_path=state_path, log=log)
    trainer.load_state()
    trainer.run(progress=progress, max_seconds=max_seconds)
    if trainer.step < recipe.steps:
        return None
    return save_trained(
        vlm,
        bench,
        out,
        trainer,
        evaluate_limit,
        {
            "recipe": asdict(recipe),
            "config": asdict(config),
            "seed": seed,
            "steps": recipe.steps,
            "bench": {"source": bench.source, "fingerprint": bench.fingerprint},
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
        },
    )


def continue_tiny(
    source: str | Path,
    bench,
    out: str | Path,
    clear_root: Path,
    seed: int = 0,
    recipe: Recipe = SKILLS_RECIPE,
    evaluate_limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    max_seconds: float | None = None,
    skill_seeds: Iterable[int] | None = None,
) -> dict | None:
    """Teach the committed tiny LLaVA at `source` the skills of tiny_skills beside its facts: its
    vocabulary extended (existing ids kept, new embedding rows), then `recipe.steps` steps of the
    usual mix with `recipe.utility_share`, `recipe.grounding_share` and `recipe.clear_share` of
    skill items (utility pictures from the mini suites of `skill_seeds`, default
    tiny_skills.UTILITY_SEEDS). Resumable like train_tiny (the same arguments resume from
    out/train_state.pt); returns None until done."""
    from mmunlearn.harness.core.model import load_vlm
    from mmunlearn.harness.embedded.tiny_skills import UTILITY_SEEDS, extend_vocabulary, new_words, skill_items

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.threads)
    torch.set_flush_denormal(True)
    seed_everything(seed)
    vlm = load_vlm(str(source), dtype="float32")
    skills = skill_items(bench, recipe.train_sets(), clear_root, seeds=tuple(skill_seeds or UTILITY_SEEDS))
    tokenizer = extend_vocabulary(vlm.tokenizer, new_words(skills, vlm.tokenizer))
    vlm.tokenizer = vlm.processor.tokenizer = tokenizer
    vlm.model.resize_token_embeddings(len(tokenizer))
    vlm.model.to(recipe.device)
    state_path = out / "train_state.pt"
    trainer = Trainer(bench, vlm, recipe, seed, state_path=state_path, log=log, extra_items=skills)
    trainer.load_state()
    trainer.run(progress=progress, max_seconds=max_seconds)
    if trainer.step < recipe.steps:
        return None
    base = Path(source) / "training.json"
    return save_trained(
        vlm,
        bench,
        out,
        trainer,
        evaluate_limit,
        {
            "continued_from": str(source),
            "base": json.loads(base.read_text()) if base.exists() else None,  # the source model's own record
            "recipe": asdict(recipe),
            "seed": seed,
            "steps": recipe.steps,
            "skill_items": len(skills),
            "vocabulary": len(tokenizer),
        },
    )
