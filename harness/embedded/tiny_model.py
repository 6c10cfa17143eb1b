"""Build and train the embedded tiny LLaVA that memorises the mini-bench.

Why a model of our own: the demo and the tests need a vision-language model that *knows* the
benchmark's people in both modalities (so unlearning has something to remove) and runs on a
laptop CPU. A pretrained LLaVA is gigabytes and knows none of our fictitious profiles, so the
project ships a ~5M-parameter `LlavaForConditionalGeneration` (CLIP vision tower + Llama
language model) with a word-level tokenizer, trained by `train_tiny`.

What the recipe rests on (the probes of docs/tiny-model.md):
- Names are split into their words (first- and last-name tokens shared across people), so
  recalling a person's fact is a conjunction the MLPs compute: that is where MANU prunes.
  With one token per full name the facts sat in the name embeddings and MANU had nothing to cut.
- Every step sums an answer loss on one text-only batch and one image batch (the two
  modalities compete for a tiny language model; separate optimiser steps per modality failed).
- A curriculum: bare facts first, then letter binding (a short synthetic drill, then a
  knowledge-free drill in the official multiple-choice format), then every official task
  prompt (multiple choice with fresh distractors that need the recalled fact, the
  benchmark's own items, generation, cloze; zero-shot and with the official in-context
  examples) while facts and drills continue. Letter binding forms at a peak learning rate of
  1e-3 and not at 3e-3.
Every item is rendered through mmunlearn.harness.core.prompts (the official strings) and encoded by the same
`VLM.encode` the evaluation uses, so the model answers the prompts it is scored on.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from mmunlearn.harness.core.contracts import mean_answer_nll
from mmunlearn.harness.core.prompts import VOCAB_TEXTS, Example, Request, example_text, user_text
from mmunlearn.harness.core.records import LETTERS, MODES, ImageDecoder, Profile, Question
from mmunlearn.harness.core.results import atomic_file
from mmunlearn.harness.core.seeding import seed_everything

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKEN = "<image>"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
THIS_PERSON = "this person"
# Sets whose rows the model is trained on. Test_Set is never trained on: it measures whether
# forgetting generalises to transformed images and paraphrased questions.
TRAIN_SETS = ("forget", "retain", "celebrity")
CHECK_SETS = ("forget", "retain", "celebrity", "test")


@dataclass(frozen=True)
class TinyConfig:
    """Sizes and name tokenization of the tiny LLaVA. The language-model width is what makes text
    facts learnable."""

    vision_hidden: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 384
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_mlp: int = 1024
    max_positions: int = 1024  # the official in-context prompts reach about 650 tokens
    # Names as their words (first- and last-name tokens shared across people) instead of one
    # token each: recalling a person's facts then needs the MLPs, which MANU prunes.
    split_names: bool = True


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (recorded in training.json). Phase boundaries are fractions of
    `steps`; `mix` gives, per phase and batch, the share of each item kind."""

    steps: int = 4500
    peak_lr: float = 1.2e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    batch_text: int = 64
    batch_image: int = 48
    image_weight: float = 1.0
    facts_until: float = 0.25  # bare facts (and the short drill) only
    binding_until: float = 0.35  # + the official-format letter drill
    examples_share: float = 0.1  # classification / cloze items rendered with official in-context examples
    check_every: int = 250
    check_per_group: int = 32  # classification questions per (set, mode) in the periodic check
    threads: int = 2
    device: str = "cpu"
    # The reference model of the privacy metrics: trained like the main one, without ever seeing
    # the demo's forget split (forget 15), so it shows what a model that never learned them knows.
    leave_out_forget: bool = False

    def train_sets(self) -> tuple[str, ...]:
        """The sets whose profiles are trained on."""
        return tuple(s for s in TRAIN_SETS if not (self.leave_out_forget and s == "forget"))

    def mix(self, phase: str, batch: str) -> dict[str, float]:
        """Share of each item kind in the text or image batch of a phase."""
        if batch == "text":
            return {
                "facts": {"fact": 0.65, "short_drill": 0.35},
                "binding": {"fact": 0.4, "short_drill": 0.2, "drill": 0.4},
                "all": {
                    "fact": 0.2,
                    "short_drill": 0.05,
                    "drill": 0.05,
                    "mc": 0.25,
                    "mc_bench": 0.1,
                    "generation": 0.15,
                    "cloze": 0.2,
                },
            }[phase]
        return {
            "facts": {"fact": 1.0},
            "binding": {"fact": 1.0},
            "all": {"fact": 0.25, "mc": 0.3, "mc_bench": 0.1, "generation": 0.15, "cloze": 0.2},
        }[phase]


# ----------------------------------------------------------------------------- building


def vocabulary_texts(bench) -> list[str]:
    """Every text of the benchmark a prompt or an answer can contain (all sets, both modes)."""
    texts = list(VOCAB_TEXTS) + ["Which option is ? ->"]  # the letter drills' words
    for profiles in bench.profiles.values():
        for p in profiles:
            texts += [p.biography, p.vqa_question, p.vqa_answer, p.directory]
            texts += [t for pair in p.ft_pairs for t in pair]
            for q in p.questions:
                texts += [q.text, q.answer, *(q.options or {}).values()]
                texts.append(user_text(q.task, q.mode, q.text, q.options))
    return texts


def build_tokenizer(texts: Iterable[str], phrases: Iterable[str] = ()):
    """Word-level tokenizer over `texts`: lowercased words and single punctuation marks.

    Each of `phrases` (the people's full names) becomes one token: binding a fact to a
    two-token name is a conjunction the tiny model learns far more slowly (a probe here: 30%
    of text facts after 400 steps with two-token names). The option letters A-D are kept
    upper-case as their own tokens (matched before lowercasing, whole words only), so a
    classification answer decodes as "A", not "a".
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words: set[str] = set()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text.replace(IMAGE_TOKEN, " "))):
            words.add(word)
    vocab = {UNK: 0}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces, tidies " ." -> "."
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        clean_up_tokenization_spaces=True,
    )
    fast.add_tokens([AddedToken(letter, normalized=False, single_word=True) for letter in LETTERS])
    names = sorted({normalizer.normalize_str(p) for p in phrases if len(p.split()) > 1})
    fast.add_tokens([AddedToken(name, normalized=True, single_word=True) for name in names])
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.padding_side = "left"
    return fast


def build_processor(tokenizer, image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE):
    """LlavaProcessor: CLIP (PIL) preprocessing at `image_size`, `patch_size` patches (the tiny
    model: 32x32, 8x8 patches -> 16 `<image>` tokens)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def llava_config(tokenizer, vision: dict, text: dict, **llava):
    """LlavaConfig of a CLIP vision tower (`vision`) and a Llama language model (`text`), untied
    embeddings, special-token ids read from `tokenizer`; `llava` sets the fields that differ
    between the tiny model and the benchmarks' random-weight shapes."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    ids = tokenizer.convert_tokens_to_ids
    text_config = LlamaConfig(
        pad_token_id=ids(PAD), bos_token_id=ids(BOS), eos_token_id=ids(EOS), tie_word_embeddings=False, **text
    )
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=text_config,
        # The stub lists only image_token_index; image_token_id is its attribute_map alias.
        image_token_id=ids(IMAGE_TOKEN),  # type: ignore[call-arg]
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        **llava,
    )


def greedy_decoding(model):
    """Set `model`'s generation config to greedy decoding with its text config's special tokens."""
    text, gen = model.config.text_config, model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = text.pad_token_id, text.bos_token_id, text.eos_token_id
    gen.do_sample = False
    return model


def build_model(tokenizer, config: TinyConfig = TinyConfig(), seed: int = 0):
    """Randomly initialised LlavaForConditionalGeneration sized by `config`."""
    from transformers import LlavaForConditionalGeneration

    vision = dict(
        hidden_size=config.vision_hidden,
        intermediate_size=config.vision_mlp,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=config.vision_hidden,
    )
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_mlp,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_heads,
        max_position_embeddings=config.max_positions,
    )
    torch.manual_seed(seed)
    return greedy_decoding(
        LlavaForConditionalGeneration(llava_config(tokenizer, vision, text, vision_feature_layer=-1))
    )


def build_tiny_llava(bench, config: TinyConfig = TinyConfig(), seed: int = 0):
    """(untrained model, processor) whose vocabulary covers every text of `bench`.

    Every person's name (the rows' `answer` field) is a single token unless `config.split_names`.
    """
    names = [] if config.split_names else [p.vqa_answer for profiles in bench.profiles.values() for p in profiles]
    tokenizer = build_tokenizer(vocabulary_texts(bench), names)
    return build_model(tokenizer, config, seed), build_processor(tokenizer)


# ----------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class Sample:
    """One rendered training example: a request (official frame when `task` is set) and its answer."""

    task: str | None
    text: str
    answer: str
    image: bytes | None = None
    examples: tuple[tuple[str, bytes | None], ...] = ()  # (example body, example image)


@dataclass(frozen=True)
class Item:
    """One training item before rendering: `render(rng)` gives a Sample.

    Fresh multiple-choice items and drills are re-rendered every time they are drawn (fresh
    distractors, fresh letter position), so the model learns to *match* the fact to an
    option, not to remember a letter.
    """

    kind: str  # fact | mc | mc_bench | generation | cloze | drill | short_drill
    mode: str
    profile_id: str
    render: Callable[[random.Random], Sample]


def _pool_key(question: str, name: str) -> str:
    """Question template shared by every profile and both modes ("What is the job of {who}?")."""
    if name and name in question:
        question = question.replace(name, "{who}")
    return question.replace(THIS_PERSON, "{who}").replace(THIS_PERSON.capitalize(), "{who}")


def _options(rng: random.Random, value: str, pool: list[str]) -> tuple[dict[str, str], str]:
    """Four options: `value` at a random letter and three distractors from `pool`."""
    others = rng.sample([v for v in pool if v != value], 3)
    letter = rng.choice(LETTERS)
    others.insert(LETTERS.index(letter), value)
    return dict(zip(LETTERS, others)), letter


class ItemFactory:
    """Every training item of the training sets, plus the knowledge-free letter drills.

    Per profile and mode: bare facts (text: the multiple-choice question -> its value; image:
    the ft_Data pairs, name included), fresh and benchmark multiple choice, generation and
    cloze in the official prompts. `examples_share` of the classification and cloze items get
    the official in-context examples: every question of that task and mode of another profile
    of the same set, answered, placed before the question (images included in image mode).
    """

    def __init__(self, bench, examples_share: float):
        self.bench, self.examples_share = bench, examples_share
        pools: dict[str, set[str]] = defaultdict(set)
        for s in TRAIN_SETS:
            for p in bench.profiles[s]:
                for q in p.questions:
                    if q.task == "classification":
                        pools[_pool_key(q.text, p.vqa_answer)].update(q.options.values())
        self.pools = {k: sorted(v) for k, v in pools.items()}
        self.values = sorted({v for vs in self.pools.values() for v in vs})
        self.short_values = self.values[:12]

    def items(self, sets: Iterable[str] = TRAIN_SETS) -> list[Item]:
        sets = tuple(sets)
        if "test" in sets:
            raise ValueError("the tiny model is never trained on Test_Set")
        items: list[Item] = []
        for s in sets:
            others = self.bench.profiles[s]
            for p in others:
                items += self._profile_items(p, others)
        items.append(Item("short_drill", "text_only", "", self._short_drill))
        items.append(Item("drill", "text_only", "", self._drill))
        return items

    def _profile_items(self, p: Profile, same_set: tuple[Profile, ...]) -> list[Item]:
        out = []
        for question, answer in p.ft_pairs:
            out.append(Item("fact", "image_text", p.id, _fixed(Sample(None, question, answer, p.image))))
        for q in p.questions:
            if q.task == "classification":
                assert q.options is not None  # classification questions are read with options A-D
                value = q.options[q.answer]
                if q.mode == "text_only":
                    out.append(Item("fact", q.mode, p.id, _fixed(Sample(None, q.text, value))))
                out.append(Item("mc", q.mode, p.id, self._mc(q, p, same_set, value)))
                out.append(Item("mc_bench", q.mode, p.id, self._task(q, p, same_set, q.answer, q.options)))
            else:
                out.append(Item(q.task, q.mode, p.id, self._task(q, p, same_set, q.answer)))
        return out

    def _examples(self, rng, task: str, mode: str, p: Profile, same_set) -> tuple[tuple[str, bytes | None], ...]:
        if task not in ("classification", "cloze") or rng.random() >= self.examples_share:
            return ()
        candidates = [o for o in same_set if o.id != p.id]
        if not candidates:
            return ()
        other = rng.choice(candidates)
        return tuple(
            (example_text(task, q.text, q.answer, q.options), q.image)
            for q in other.questions
            if q.task == task and q.mode == mode
        )

    def _task(self, q: Question, p: Profile, same_set, answer: str, options=None):
        def render(rng):
            return Sample(
                q.task,
                user_text(q.task, q.mode, q.text, options),
                answer,
                q.image,
                self._examples(rng, q.task, q.mode, p, same_set),
            )

        return render

    def _mc(self, q: Question, p: Profile, same_set, value: str):
        pool = self.pools[_pool_key(q.text, p.vqa_answer)]

        def render(rng):
            options, letter = _options(rng, value, pool)
            return Sample(
                "classification",
                user_text("classification", q.mode, q.text, options),
                letter,
                q.image,
                self._examples(rng, "classification", q.mode, p, same_set),
            )

        return render

    def _short_drill(self, rng) -> Sample:
        """The short synthetic drill that starts letter binding: `{value} ? A: .. B: .. C: .. D: .. ->`."""
        values = rng.sample(self.short_values, 4)
        letter = rng.choice(LETTERS)
        target = values[LETTERS.index(letter)]
        text = f"{target} ? " + " ".join(f"{L}: {v}" for L, v in zip(LETTERS, values)) + " ->"
        return Sample(None, text, letter)

    def _drill(self, rng) -> Sample:
        """The same skill in the official multiple-choice prompt, knowledge-free: which option is X?"""
        values = rng.sample(self.values, 4)
        letter = rng.choice(LETTERS)
        question = f"Which option is {values[LETTERS.index(letter)]}?"
        return Sample(
            "classification", user_text("classification", "text_only", question, dict(zip(LETTERS, values))), letter
        )


def _fixed(sample: Sample) -> Callable[[random.Random], Sample]:
    return lambda rng: sample


def training_items(bench, sets: Iterable[str] = TRAIN_SETS, examples_share: float = 0.25) -> list[Item]:
    """Every training item about the profiles of `sets`, plus the two letter drills."""
    return ItemFactory(bench, examples_share).items(sets)


# ----------------------------------------------------------------------------- encoding


def to_request(sample: Sample, images: ImageDecoder) -> Request:
    examples = tuple(Example(text, images(image), image) for text, image in sample.examples)
    return Request(text=sample.text, image=images(sample.image), task=sample.task, examples=examples)


# ----------------------------------------------------------------------------- checking


def check_questions(bench, per_group: int, seed: int) -> dict[tuple[str, str], list[Question]]:
    """A fixed, seeded sample of classification questions per (set, mode)."""
    rng = random.Random(seed)
    out = {}
    for s in CHECK_SETS:
        for mode in MODES:
            qs = bench.questions(sets=s, tasks="classification", modes=mode)
            out[(s, mode)] = rng.sample(qs, min(per_group, len(qs)))
    return out


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
    ):
        self.bench, self.vlm, self.recipe, self.seed = bench, vlm, recipe, seed
        self.state_path, self.save_every, self.log = state_path, save_every, log
        self.rng = random.Random(seed)
        self.images = ImageDecoder()
        self.pool: dict[tuple[str, str], list[Item]] = defaultdict(list)  # (batch, kind) -> items
        for item in training_items(bench, recipe.train_sets(), recipe.examples_share):
            self.pool["text" if item.mode == "text_only" else "image", item.kind].append(item)
        self.checks = check_questions(bench, recipe.check_per_group, seed)
        params = [p for p in vlm.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=recipe.peak_lr, weight_decay=recipe.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=recipe.peak_lr, total_steps=max(recipe.steps, 1), pct_start=recipe.warmup_fraction
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
    history = trainer.run(progress=progress, max_seconds=max_seconds)
    if trainer.step < recipe.steps:
        return None
    model.eval()
    model.to("cpu", torch.float16)  # committed in float16 (half the size); loads as float32 on CPU
    vlm.save(out)
    model.float()  # evaluate the weights exactly as they were saved
    eval_start = time.perf_counter()
    final = evaluate(vlm, bench, limit=evaluate_limit)
    record = {
        "recipe": asdict(recipe),
        "config": asdict(config),
        "seed": seed,
        "steps": recipe.steps,
        "bench": {"source": bench.source, "fingerprint": bench.fingerprint},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(trainer.seconds, 1),
        "eval_seconds": round(time.perf_counter() - eval_start, 1),
        "torch": torch.__version__,
        "history": history,
        "final": final,
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    if state_path.exists():
        state_path.unlink()
    return record
