"""The skills the embedded tiny LLaVA lacks, as training items: general ability on pictures of
shapes (the utility suites' prompts, and reading what is where in a picture) and CLEAR's prompts
(captions, the face prompt, bare text questions, MMUnlearner's identity multiple choice), each
rendered exactly as its task renders it (the generic chat frame, `task=None`).

Why fresh pictures: the utility items come from mini suites built with other seeds than the
committed one (`build_mini_utility(dir, seed=k)`, k >= 1), so the committed seed-0 suites measure
a skill on pictures the model never saw, not a memory. The CLEAR items cover the training sets'
people only (`sets`: the reference model leaves the forget people out, as for its facts).
"""

from __future__ import annotations

import io
import random
import tempfile
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from mmunlearn.harness.core.mmmu_eval import prompt_for
from mmunlearn.harness.core.mmunlearner_choice import CAPTION_QUESTIONS, IDENTITY_QUESTION, format_prompt, option_letter
from mmunlearn.harness.embedded.tiny_data import Item, Sample

FACE_PROMPT = "The name of the person on the image is "  # CLEAR's (benchmarks/clear.py reads the same)
UTILITY_SEEDS = tuple(range(1, 41))  # 40 fresh suites: about 3,000 pictures
POPE_EVERY = 4  # POPE asks 12 questions per picture; one in four (drawn) keeps the suites about even


def _fixed(sample: Sample) -> Callable[[random.Random], Sample]:
    """An item renderer that always gives `sample`."""
    return lambda rng: sample


def utility_items(seeds=UTILITY_SEEDS, pope_every: int = POPE_EVERY) -> list[Item]:
    """Image items of every suite's prompt, from mini suites built with `seeds` (fresh pictures)."""
    from mmunlearn.harness.embedded.mini_utility import build_mini_utility, training_items

    items = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            root = Path(tmp) / f"seed-{seed}"
            build_mini_utility(root, seed=seed)
            keep = random.Random(f"pope:{seed}")  # not every k-th row: POPE's rows alternate yes / no
            for r in training_items(root):
                if r["suite"] == "pope" and keep.randrange(pope_every):
                    continue
                if r["suite"] == "mmmu":
                    qtype = "multiple-choice" if r["options"] else "open"
                    text = prompt_for("mmmu", r["question"], r["options"] or [], qtype)
                else:
                    text = r["question"]
                sample = Sample(None, text, r["answer"], r["image"])
                items.append(Item("utility", "image_text", f"utility/{r['suite']}", _fixed(sample)))
    return items


GROUNDING_PICTURES = 3000
DESCRIBE = "Describe the image."


def grounding_items(n_pictures: int = GROUNDING_PICTURES, seed: str = "grounding") -> list[Item]:
    """Reading the picture before answering about it, as LLaVA's first stage teaches it (captions
    before instructions): fresh shape pictures (mini_utility's drawing, 1-4 shapes, a seeded
    stream of their own), each asked what is in each quarter ("a red circle" / "nothing") and
    to be described (every shape and where it is). A word answer carries several nats of the
    picture per item, where a yes/no or a letter carries at most one."""
    from mmunlearn.harness.embedded.mini_utility import CELLS, describe, draw, random_scene

    rng = random.Random(seed)
    items = []
    for k in range(n_pictures):
        scene = random_scene(rng, rng.randint(1, 4))
        buf = io.BytesIO()
        draw(scene).save(buf, format="PNG")
        image = buf.getvalue()
        items.append(
            Item(
                "grounding",
                "image_text",
                f"grounding/{k}",
                _fixed(Sample(None, DESCRIBE, describe(scene), image)),
            )
        )
        for cell in CELLS:
            shape = scene.at(cell)
            answer = f"a {shape.name}" if shape else "nothing"
            question = f"What is at the {cell} of the image?"
            items.append(
                Item("grounding", "image_text", f"grounding/{k}", _fixed(Sample(None, question, answer, image)))
            )
    return items


def clear_items(clear_root: Path, names: set[str]) -> list[Item]:
    """CLEAR's prompts about the people named in `names` (the mini-CLEAR's `full` config): every
    caption question with the image -> the caption, the face prompt -> the name, MMUnlearner's
    identity multiple choice (fresh distractors and letter at each draw) -> the letter; and the
    +tofu text rows about them, asked bare -> the answer."""
    rows = [r for r in pq.read_table(clear_root / "full").to_pylist() if r["name"] in names]
    everyone = sorted({r["name"] for r in rows})  # distractors from the same people: no other name is seen
    items = []
    for r in rows:
        image, caption, name = r["image"]["bytes"], r["caption"], r["name"]
        for question in CAPTION_QUESTIONS:
            items.append(Item("clear", "image_text", name, _fixed(Sample(None, question, caption, image))))
        items.append(Item("clear", "image_text", name, _fixed(Sample(None, FACE_PROMPT, name, image))))

        def identity(rng, name=name, image=image):
            options = rng.sample([n for n in everyone if n != name], 3)
            k = rng.randrange(4)
            options.insert(k, name)
            return Sample(None, format_prompt(IDENTITY_QUESTION, options), option_letter(k), image)

        items.append(Item("clear", "image_text", name, identity))
    tofu = (
        pq.read_table(clear_root / "forget10+tofu").to_pylist()
        + pq.read_table(clear_root / "retain90+tofu").to_pylist()
    )
    for r in tofu:
        if r["image"] is None and any(n in r["question"] for n in names):
            items.append(Item("clear", "text_only", "tofu", _fixed(Sample(None, r["question"], r["answer"]))))
    return items


def skill_items(bench, sets, clear_root: Path, seeds=UTILITY_SEEDS) -> list[Item]:
    """Utility, picture-reading and CLEAR items for a model trained on `sets` of `bench` (CLEAR:
    its people only)."""
    names = {p.vqa_answer for s in sets for p in bench.profiles[s]}
    return utility_items(seeds) + grounding_items() + clear_items(clear_root, names)


def new_words(items: list[Item], tokenizer) -> list[str]:
    """The words of the items' texts and answers that the word-level tokenizer does not know."""
    vocab = tokenizer.get_vocab()
    rng = random.Random(0)
    words = set()
    for item in items:
        s = item.render(rng)
        for text in (s.text, s.answer):
            for w in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(
                tokenizer.backend_tokenizer.normalizer.normalize_str(text)
            ):
                if w[0] not in vocab:
                    words.add(w[0])
    return sorted(words)


def extend_vocabulary(fast, words: list[str]):
    """A copy of the word-level tokenizer that knows `words` (appended after every existing id, so
    the committed embeddings keep their rows: whole words only, as the people's names were added)
    and "E", a fifth option letter kept upper-case like A-D."""
    import copy

    from tokenizers import AddedToken

    out = copy.deepcopy(fast)
    out.add_tokens(
        [AddedToken(w, normalized=True, single_word=w.isalnum()) for w in words if w != "e"]
        + [AddedToken("E", normalized=False, single_word=True)]
    )
    return out
