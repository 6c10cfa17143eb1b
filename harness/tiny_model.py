"""Build and train the embedded tiny LLaVA that memorises the mini-bench.

Why a model of our own: the demo and the tests need a vision-language model that *knows* the
benchmark's people in both modalities (so unlearning has something to remove) and runs on a
laptop CPU. A pretrained LLaVA is gigabytes and knows none of our fictitious profiles, so the
project ships a ~5M-parameter `LlavaForConditionalGeneration` (CLIP vision tower + Llama
language model) with a word-level tokenizer, trained by `train_tiny` in two stages that mirror
how the real benchmark is built: "pretraining" on the celebrities (Retain_Set), then "vanilla
fine-tuning" on all fictitious profiles.

The recipe follows what a probe found (shared/DESIGN.md, "The embedded default"): every step
sums one random batch of each kind -- text-only facts (weight 2), image -> name,
image -> attribute -- with AdamW and a OneCycle schedule; a language model 256 wide with a
1024 MLP so text facts fit next to image facts. Items are rendered in the benchmark's own task
prompts (classification, generation, cloze) through the same `VLM.encode` the evaluation uses,
so the model answers the task formats, not only bare questions.

Two findings of our own (measured while iterating, per set and mode): (1) every full name is
one token -- with two-token names the model learned no facts at all in 600 steps; (2) the first
`facts_fraction` of the steps trains on bare question -> answer facts only, the rest on every
format. Mixing all formats from step 0 left the model at chance after 400+ steps: the task
prompts dilute the fact signal, and multiple choice is learnable only once the facts are known.
"""
from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from harness.prompts import VOCAB_TEXTS, classification_prompt, cloze_prompt, generation_prompt
from harness.records import LETTERS, MODES, Profile, Question, decode_image

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKEN = "<image>"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
THIS_PERSON = "this person"
# Sets whose rows the model is trained on. Test_Set is never trained on: it measures whether
# forgetting generalises to transformed images and paraphrased questions.
PRETRAIN_SETS = ("celebrity",)
FINETUNE_SETS = ("forget", "retain", "celebrity")
CHECK_SETS = ("forget", "retain", "celebrity", "test")
KINDS = ("text", "image_name", "image_attribute")


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
    max_positions: int = 256
    # Names as their words (first- and last-name tokens shared across people) instead of one
    # token each: recalling a person's facts then needs the MLPs, which MANU prunes. Slower to
    # learn (README, "Known limits of the tiny model").
    split_names: bool = False


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (recorded in training.json)."""

    steps: int = 1600
    pretrain_fraction: float = 0.1  # first part of the steps sees only the celebrities
    facts_fraction: float = 0.45  # first part of the steps sees only bare question -> answer facts
    loss_average: str = "token"  # "token" or "item" (see Trainer.batch_loss)
    mc_share: float = 0.0  # after the facts phase, this share of each batch is the benchmark's own MC items
    peak_lr: float = 2e-3
    weight_decay: float = 0.01
    batch_text: int = 32
    batch_image_name: int = 16
    batch_image_attribute: int = 24
    text_weight: float = 2.0
    check_every: int = 100
    check_per_group: int = 32  # classification questions per (set, mode) in the periodic check
    threads: int = 2


# ----------------------------------------------------------------------------- building

def _words(bench) -> list[str]:
    """Every text of the benchmark a prompt or an answer can contain (all sets, both modes)."""
    texts = list(VOCAB_TEXTS)
    for profiles in bench.profiles.values():
        for p in profiles:
            texts += [p.biography, p.vqa_question, p.vqa_answer, p.directory]
            texts += [t for pair in p.ft_pairs for t in pair]
            for q in p.questions:
                texts += [q.text, q.answer, *(q.options or {}).values()]
                if q.task == "cloze":
                    texts.append(cloze_prompt(q.text))
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
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, clean_up_tokenization_spaces=True)
    fast.add_tokens([AddedToken(letter, normalized=False, single_word=True) for letter in LETTERS])
    names = sorted({normalizer.normalize_str(p) for p in phrases if len(p.split()) > 1})
    fast.add_tokens([AddedToken(name, normalized=True, single_word=True) for name in names])
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.padding_side = "left"
    return fast


def build_processor(tokenizer):
    """LlavaProcessor: 32x32 CLIP (PIL) preprocessing, 8x8 patches -> 16 `<image>` tokens."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token=IMAGE_TOKEN)


def build_model(tokenizer, config: TinyConfig = TinyConfig(), seed: int = 0):
    """Randomly initialised LlavaForConditionalGeneration sized by `config`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden, intermediate_size=config.vision_mlp,
        num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=config.vision_hidden)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden, intermediate_size=config.text_mlp,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_heads, max_position_embeddings=config.max_positions,
        pad_token_id=ids(PAD), bos_token_id=ids(BOS), eos_token_id=ids(EOS), tie_word_embeddings=False)
    cfg = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default", vision_feature_layer=-1, projector_hidden_act="gelu",
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = ids(PAD), ids(BOS), ids(EOS)
    gen.do_sample = False
    return model


def build_tiny_llava(bench, config: TinyConfig = TinyConfig(), seed: int = 0):
    """(untrained model, processor) whose vocabulary covers every text of `bench`.

    Every person's name (the rows' `answer` field) is a single token unless `config.split_names`.
    """
    names = [] if config.split_names else [p.vqa_answer for profiles in bench.profiles.values() for p in profiles]
    tokenizer = build_tokenizer(_words(bench), names)
    return build_model(tokenizer, config, seed), build_processor(tokenizer)


# ----------------------------------------------------------------------------- training data

@dataclass(frozen=True)
class Item:
    """One training example before rendering: `render(rng)` gives (user text, answer).

    Multiple-choice items are re-rendered every time they are drawn (fresh distractors, fresh
    letter position), so the model learns to *match* the fact to an option, not a letter.
    """

    kind: str  # one of KINDS
    profile_id: str
    image: bytes | None
    render: Callable[[random.Random], tuple[str, str]]
    bare: bool = False  # a bare question -> answer fact (no task prompt around it)
    benchmark_mc: bool = False  # the benchmark's own multiple-choice item (fixed options and letter)


def _pool_key(question: str, name: str) -> str:
    """Question template shared by every profile and both modes ("What is the job of {who}?")."""
    if name and name in question:
        question = question.replace(name, "{who}")
    return question.replace(THIS_PERSON, "{who}").replace(THIS_PERSON.capitalize(), "{who}")


def _mc(question: str, value: str, pool: list[str]) -> Callable[[random.Random], tuple[str, str]]:
    def render(rng: random.Random) -> tuple[str, str]:
        others = [v for v in pool if v != value]
        options = rng.sample(others, min(3, len(others)))
        letter = rng.choice(LETTERS)
        options.insert(LETTERS.index(letter), value)
        while len(options) < len(LETTERS):  # a pool too small for 3 distractors (never on the mini-bench)
            options.append(rng.choice(others or [value]))
        return classification_prompt(question, dict(zip(LETTERS, options))), letter
    return render


def _fixed(text: str, answer: str) -> Callable[[random.Random], tuple[str, str]]:
    return lambda rng: (text, answer)


def _is_name_question(q: Question, profile: Profile) -> bool:
    return q.task == "classification" and q.options[q.answer] == profile.vqa_answer


def training_items(bench, sets: Iterable[str]) -> list[Item]:
    """Every item about the profiles of `sets`, in every task format and both modes.

    Per classification fact: a fresh multiple-choice item (distractors from the same attribute
    pool), the benchmark's own multiple-choice item, and the bare question (image mode: the
    ft_Data answer sentence; text mode: the value). Plus the generation and cloze questions.
    """
    sets = tuple(sets)
    if "test" in sets:
        raise ValueError("the tiny model is never trained on Test_Set")
    pools: dict[str, set[str]] = defaultdict(set)  # distractor values, from training rows only
    for s in FINETUNE_SETS:
        for p in bench.profiles[s]:
            for q in p.questions:
                if q.task == "classification":
                    pools[_pool_key(q.text, p.vqa_answer)].update(q.options.values())
    sorted_pools = {k: sorted(v) for k, v in pools.items()}

    items: list[Item] = []
    for s in sets:
        for p in bench.profiles[s]:
            ft = dict(p.ft_pairs)
            name_questions = {q.text for q in p.questions if _is_name_question(q, p)}

            def add(kind_mode: str, question_text: str, render, q_image: bytes | None, bare: bool = False,
                    benchmark_mc: bool = False):
                if kind_mode == "text_only":
                    kind = "text"
                else:
                    kind = "image_name" if question_text in name_questions else "image_attribute"
                items.append(Item(kind, p.id, q_image, render, bare, benchmark_mc))

            for q in p.questions:
                image = p.image if q.mode == "image_text" else None
                if q.task == "classification":
                    value = q.options[q.answer]
                    pool = sorted_pools[_pool_key(q.text, p.vqa_answer)]
                    add(q.mode, q.text, _mc(q.text, value, pool), image)
                    add(q.mode, q.text, _fixed(classification_prompt(q.text, q.options), q.answer), image,
                        benchmark_mc=True)
                    if q.mode == "text_only" or q.text not in ft:
                        add(q.mode, q.text, _fixed(q.text, value), image, bare=True)
                elif q.task == "generation":
                    add(q.mode, q.text, _fixed(generation_prompt(q.text), q.answer), image)
                else:
                    add(q.mode, q.text, _fixed(cloze_prompt(q.text), q.answer), image)
            for question, answer in p.ft_pairs:
                add("image_text", question, _fixed(question, answer), p.image, bare=True)
    return items


# ----------------------------------------------------------------------------- encoding

class _Images:
    """Decoded PIL images, cached by their bytes (each portrait is decoded once)."""

    def __init__(self):
        self._cache: dict[bytes, object] = {}

    def __call__(self, data: bytes | None):
        if data is None:
            return None
        if data not in self._cache:
            self._cache[data] = decode_image(data)
        return self._cache[data]


def _requests(items_texts, images: _Images):
    from harness.model import Request

    return [Request(text=text, image=images(image)) for image, text in items_texts]


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
def first_token_accuracy(vlm, questions: list[Question], images: _Images, batch: int = 64) -> float:
    """Share of questions whose greedy first answer token starts with the right letter.

    One forward pass per batch: the greedy first token is the arg-max at the last prompt
    position, so this equals generate()'s first character without decoding 50 tokens.
    """
    if not questions:
        return float("nan")
    was_training = vlm.model.training
    vlm.model.eval()
    correct = 0
    for i in range(0, len(questions), batch):
        chunk = questions[i:i + batch]
        reqs = _requests([(q.image, classification_prompt(q.text, q.options)) for q in chunk], images)
        enc = vlm.encode(reqs)
        logits = vlm.model(**enc).logits[:, -1]
        for q, tok in zip(chunk, logits.argmax(-1).tolist()):
            correct += vlm.tokenizer.decode([tok]).strip()[:1] == q.answer
    vlm.model.train(was_training)
    return correct / len(questions)


def evaluate(vlm, bench, sets: Iterable[str] = CHECK_SETS, batch_size: int = 64,
             limit: int | None = None) -> dict:
    """Greedy generate on the benchmark's questions; scores per set, task and mode.

    classification: first character of the response is the letter; cloze: the lowercased
    ground truth is a substring of the lowercased response (official scoring); generation:
    ROUGE-L F against the ground truth. `limit` caps questions per (set, task, mode).
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    images = _Images()
    out: dict = {}
    for s in sets:
        for task in ("classification", "cloze", "generation"):
            for mode in MODES:
                qs = bench.questions(sets=s, tasks=task, modes=mode)[:limit]
                if task == "classification":
                    texts = [classification_prompt(q.text, q.options) for q in qs]
                elif task == "cloze":
                    texts = [cloze_prompt(q.text) for q in qs]
                else:
                    texts = [generation_prompt(q.text) for q in qs]
                responses = vlm.generate(_requests([(q.image, t) for q, t in zip(qs, texts)], images),
                                         max_new_tokens=50 if task == "generation" else 12,
                                         batch_size=batch_size, desc=f"{s}/{task}/{mode}")
                if task == "classification":
                    scores = [r.strip()[:1] == q.answer for q, r in zip(qs, responses)]
                elif task == "cloze":
                    scores = [q.answer.lower() in r.lower() for q, r in zip(qs, responses)]
                else:
                    scores = [scorer.score(q.answer, r)["rougeL"].fmeasure for q, r in zip(qs, responses)]
                metric = {"classification": "accuracy", "cloze": "accuracy", "generation": "rougeL"}[task]
                out.setdefault(s, {}).setdefault(task, {})[mode] = {
                    metric: round(float(np.mean(scores)), 4) if scores else None, "n": len(qs)}
    return out


# ----------------------------------------------------------------------------- training

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """The training loop; small enough to read top to bottom.

    Profiles: celebrities only for the first `pretrain_fraction` of the steps, then everyone.
    Formats: bare facts only for the first `facts_fraction` of the steps, then every format.

    State (model, optimiser, schedule, RNGs, step) is saved to `state_path` every
    `save_every` steps and restored on start, so a killed run resumes where it stopped.
    """

    def __init__(self, bench, vlm, recipe: Recipe, seed: int, state_path: Path | None = None,
                 save_every: int = 100, log: Callable[[str], None] = print):
        self.bench, self.vlm, self.recipe, self.seed = bench, vlm, recipe, seed
        self.state_path, self.save_every, self.log = state_path, save_every, log
        self.rng = random.Random(seed)
        self.images = _Images()
        self.pretrain_steps = int(recipe.steps * recipe.pretrain_fraction)
        self.facts_steps = int(recipe.steps * recipe.facts_fraction)
        self.items = {}  # (stage, "facts" | "all") -> kind -> items
        for stage, sets in (("pretrain", PRETRAIN_SETS), ("finetune", FINETUNE_SETS)):
            items = training_items(bench, sets)
            self.items[stage, "all"] = self._by_kind(items)
            self.items[stage, "facts"] = self._by_kind([i for i in items if i.bare])
            self.items[stage, "mc"] = self._by_kind([i for i in items if i.benchmark_mc])
        self.checks = check_questions(bench, recipe.check_per_group, seed)
        params = [p for p in vlm.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=recipe.peak_lr, weight_decay=recipe.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=recipe.peak_lr, total_steps=max(recipe.steps, 1), pct_start=0.15)
        self.step = 0
        self.history: list[dict] = []
        self.seconds = 0.0

    @staticmethod
    def _by_kind(items: list[Item]) -> dict[str, list[Item]]:
        by_kind = {k: [] for k in KINDS}
        for item in items:
            by_kind[item.kind].append(item)
        return by_kind

    def batch_loss(self, items: list[Item], rng: random.Random | None = None) -> torch.Tensor:
        """Answer NLL of one batch (prompt tokens masked), averaged per token or per item.

        `recipe.loss_average="token"` (what the committed checkpoint used) is the usual token
        mean; "item" averages each item's answer first, so a one-letter multiple-choice answer
        weighs as much as a sentence (tried to speed up multiple choice; it did not in 500 steps).
        """
        rng = rng or self.rng
        rendered = [(item.image, *item.render(rng)) for item in items]
        reqs = _requests([(image, text) for image, text, _ in rendered], self.images)
        enc = self.vlm.encode(reqs, [answer for _, _, answer in rendered])  # appends EOS
        if self.recipe.loss_average == "token":
            return self.vlm.model(**enc).loss
        labels = enc.pop("labels")[:, 1:]
        logits = self.vlm.model(**enc).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                reduction="none")
        answer = labels != -100
        return ((nll * answer).sum(1) / answer.sum(1).clamp(min=1)).mean()

    def train_step(self) -> dict[str, float]:
        """One optimiser step on the weighted sum of one batch per kind."""
        r = self.recipe
        stage = "pretrain" if self.step < self.pretrain_steps else "finetune"
        phase = "facts" if self.step < self.facts_steps else "all"
        sizes = {"text": r.batch_text, "image_name": r.batch_image_name, "image_attribute": r.batch_image_attribute}
        weights = {"text": r.text_weight, "image_name": 1.0, "image_attribute": 1.0}
        self.vlm.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = {}
        for kind in KINDS:
            pool = self.items[stage, phase][kind]
            if not pool or sizes[kind] <= 0:
                continue
            n_mc = round(sizes[kind] * r.mc_share) if phase == "all" else 0
            mc_pool = self.items[stage, "mc"].get(kind) or pool
            batch = [self.rng.choice(mc_pool) for _ in range(n_mc)]
            batch += [self.rng.choice(pool) for _ in range(sizes[kind] - n_mc)]
            loss = self.batch_loss(batch)
            (weights[kind] * loss).backward()
            losses[kind] = loss.item()
        torch.nn.utils.clip_grad_norm_(self.vlm.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        return losses

    def check(self) -> dict[str, float]:
        """Classification accuracy (first greedy token) per set/mode on the fixed check sample."""
        return {f"{s}/{m}": round(first_token_accuracy(self.vlm, qs, self.images), 3)
                for (s, m), qs in self.checks.items()}

    def save_state(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        torch.save({
            "step": self.step, "seed": self.seed, "recipe": asdict(self.recipe), "history": self.history,
            "seconds": self.seconds, "model": self.vlm.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(),
        }, tmp)
        tmp.replace(self.state_path)

    def load_state(self) -> bool:
        """Resume from `state_path` when it holds a run with the same seed and recipe."""
        if self.state_path is None or not self.state_path.exists():
            return False
        state = torch.load(self.state_path, weights_only=False)
        if state["seed"] != self.seed or state["recipe"] != asdict(self.recipe):
            self.log(f"ignoring {self.state_path}: it was saved for another seed or recipe")
            return False
        self.vlm.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.history, self.seconds = state["step"], state["history"], state["seconds"]
        self.log(f"resumed at step {self.step}")
        return True

    def run(self, progress: bool = True) -> list[dict]:
        from tqdm.auto import tqdm

        r = self.recipe
        bar = tqdm(total=r.steps, initial=self.step, desc="train-tiny", disable=not progress)
        running: dict[str, float] = {}
        start = time.perf_counter() - self.seconds
        while self.step < r.steps:
            losses = self.train_step()
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in losses.items()}
            bar.update(1)
            bar.set_postfix({k.split("_")[-1]: f"{v:.3f}" for k, v in running.items()})
            self.seconds = time.perf_counter() - start
            if self.step % r.check_every == 0 or self.step == r.steps:
                acc = self.check()
                self.history.append({"step": self.step, "seconds": round(self.seconds, 1),
                                     "loss": {k: round(v, 4) for k, v in running.items()}, "accuracy": acc})
                self.log(json.dumps(self.history[-1]))
            if self.step % self.save_every == 0:
                self.save_state()
        bar.close()
        return self.history


def train_tiny(bench, out: str | Path, seed: int = 0, recipe: Recipe = Recipe(),
               config: TinyConfig = TinyConfig(), evaluate_limit: int | None = None,
               progress: bool = True, log: Callable[[str], None] = print,
               init: str | Path | None = None) -> dict:
    """Build (or, with `init`, load and continue) the tiny LLaVA, train it and save it into `out`.

    Returns the training.json record; with `init`, the record of the run it continued is kept
    under "continued_from" so the full recipe stays on file.
    """
    from harness.model import load_vlm, wrap_vlm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.threads)
    torch.set_flush_denormal(True)  # denormals make CPU matmuls very slow late in training
    seed_everything(seed)
    previous = None
    if init is not None:
        vlm = load_vlm(init, device="cpu")
        model = vlm.model
        previous_path = Path(init) / "training.json"
        previous = json.loads(previous_path.read_text()) if previous_path.exists() else None
    else:
        model, processor = build_tiny_llava(bench, config, seed)
        vlm = wrap_vlm(model, processor, source=str(out))
    trainer = Trainer(bench, vlm, recipe, seed, state_path=out / "train_state.pt", log=log)
    trainer.load_state()
    history = trainer.run(progress=progress)
    model.eval()
    vlm.save(out)
    eval_start = time.perf_counter()
    final = evaluate(vlm, bench, limit=evaluate_limit)
    record = {
        "recipe": asdict(recipe), "config": asdict(config), "seed": seed, "steps": recipe.steps,
        "bench": {"source": bench.source, "fingerprint": bench.fingerprint},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(trainer.seconds, 1), "eval_seconds": round(time.perf_counter() - eval_start, 1),
        "torch": torch.__version__, "history": history, "final": final,
    }
    if previous is not None:
        record["continued_from"] = previous
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    if trainer.state_path.exists():
        trainer.state_path.unlink()
    return record
