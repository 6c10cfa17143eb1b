"""The skills the tiny LLaVA is taught beside its facts (tiny_skills): items rendered as the
tasks render them, from pictures the committed suites do not contain; a vocabulary extension
that keeps every existing id; a continued training that resumes and saves a loadable model."""

from __future__ import annotations

import random

import pytest

from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL, MINI_CLEAR
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.mmmu_eval import MULTIPLE_CHOICE_INSTRUCTION
from mmunlearn.harness.core.model import load_vlm
from mmunlearn.harness.embedded import tiny_skills
from mmunlearn.harness.embedded.mini_utility import training_items as committed_items


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(DEFAULT_BENCH, forget=15)


def test_skill_items_use_the_tasks_prompts_on_fresh_pictures(bench):
    items = tiny_skills.skill_items(bench, ("retain", "celebrity"), MINI_CLEAR, seeds=(1,))
    rng = random.Random(0)
    samples = [i.render(rng) for i in items]
    assert any(s.text.endswith(MULTIPLE_CHOICE_INSTRUCTION) for s in samples)  # MMMU's official prompt
    assert any(s.text.startswith("The name of the person on the image is") for s in samples)
    committed = {r["image"] for r in committed_items()}
    assert not committed & {s.image for s in samples if s.image}  # no picture of the scored suites
    forget = {p.vqa_answer for p in bench.profiles["forget"]}
    assert not any(name in s.text or name == s.answer for s in samples for name in forget)  # reference-safe


def test_the_vocabulary_grows_without_moving_an_existing_id(bench):
    tok = load_vlm(str(DEFAULT_MODEL)).tokenizer
    items = tiny_skills.skill_items(bench, ("retain",), MINI_CLEAR, seeds=(1,))
    new = tiny_skills.extend_vocabulary(tok, tiny_skills.new_words(items, tok))
    assert len(new) > len(tok) and new.get_vocab().items() >= tok.get_vocab().items()
    text = "USER: <image>\nWhat is the job of this person?\nASSISTANT: A"
    assert new(text)["input_ids"] == tok(text)["input_ids"]
    assert new.convert_ids_to_tokens(new("(E) three red circles")["input_ids"]) == [
        "(",
        "E",
        ")",
        "three",
        "red",
        "circles",
    ]
