"""What the embedded tiny LLaVA is trained on: its vocabulary, tokenizer and processor, and the
training items that the curriculum (tiny_recipe.Recipe) mixes.

Every item is rendered through mmunlearn.harness.core.prompts (the official strings) and encoded by the
same `VLM.encode` the evaluation uses, so the model answers the prompts it is scored on; the
word-level vocabulary holds every text of the bench, so none of those prompts has an unknown token.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from mmunlearn.harness.core.prompts import VOCAB_TEXTS, Example, Request, example_text, user_text
from mmunlearn.harness.core.records import LETTERS, MODES, ImageDecoder, Profile, Question

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKEN = "<image>"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
THIS_PERSON = "this person"
# Sets whose rows the model is trained on. Test_Set is never trained on: it measures whether
# forgetting generalises to transformed images and paraphrased questions.
TRAIN_SETS = ("forget", "retain", "celebrity")
CHECK_SETS = ("forget", "retain", "celebrity", "test")


# ----------------------------------------------------------------------------- vocabulary


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
