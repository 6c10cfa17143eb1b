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


def test_the_skills_take_their_share_of_the_batch_and_the_facts_keep_the_rest():
    from mmunlearn.harness.embedded.tiny_recipe import SKILLS_RECIPE, Recipe

    r = SKILLS_RECIPE
    mix = r.mix("all", "image")
    assert (mix["utility"], mix["grounding"], mix["clear"]) == (r.utility_share, r.grounding_share, r.clear_share)
    assert sum(mix.values()) == pytest.approx(1.0)
    base = Recipe().mix("all", "image")
    rest = 1 - r.utility_share - r.grounding_share - r.clear_share
    assert all(mix[k] == pytest.approx(w * rest) for k, w in base.items())  # the facts' own proportions
    assert Recipe().mix("facts", "image") == SKILLS_RECIPE.mix("facts", "image")  # only the "all" phase


def test_the_vision_side_can_learn_faster_than_the_language_model():
    from dataclasses import replace

    from mmunlearn.harness.embedded.tiny_recipe import SKILLS_RECIPE
    from mmunlearn.harness.embedded.tiny_trainer import parameter_groups

    model = load_vlm(str(DEFAULT_MODEL)).model
    language, vision = parameter_groups(model, SKILLS_RECIPE)
    assert (language["lr"], vision["lr"]) == (SKILLS_RECIPE.peak_lr, SKILLS_RECIPE.vision_lr)
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert all("vision_tower" in by_id[id(p)] or "projector" in by_id[id(p)] for p in vision["params"])
    assert {id(p) for g in (language, vision) for p in g["params"]} == set(by_id)  # each parameter once
    assert len(parameter_groups(model, replace(SKILLS_RECIPE, vision_lr=None))) == 1


def test_continued_training_resumes_and_saves_a_model_that_reads_the_new_words(bench, tmp_path):
    from dataclasses import replace

    from mmunlearn.harness.embedded.tiny_recipe import SKILLS_RECIPE
    from mmunlearn.harness.embedded.tiny_trainer import continue_tiny

    recipe = replace(SKILLS_RECIPE, steps=2, batch_text=2, batch_image=4, check_per_group=1)
    kwargs = dict(recipe=recipe, evaluate_limit=1, progress=False, log=lambda line: None, skill_seeds=(1,))
    out = tmp_path / "skills"
    assert continue_tiny(DEFAULT_MODEL, bench, out, MINI_CLEAR, max_seconds=0, **kwargs) is None  # stopped at step 1
    assert (out / "train_state.pt").exists()
    record = continue_tiny(DEFAULT_MODEL, bench, out, MINI_CLEAR, **kwargs)
    assert record is not None and [h["step"] for h in record["history"]] == [2]  # resumed, not restarted
    assert record["base"]["steps"] == 4500 and not (out / "train_state.pt").exists()
    vlm = load_vlm(str(out))
    assert "circles" in vlm.tokenizer.get_vocab()
    assert vlm.model.get_input_embeddings().num_embeddings == len(vlm.tokenizer)


def test_skill_shares_belong_to_a_continued_training(tmp_path, capsys):
    from mmunlearn.harness.app.cli import main

    assert main(["train-tiny", "--out", str(tmp_path), "--utility-share", "0.3"]) != 0
    assert "--skills-from" in capsys.readouterr().err


def test_the_yes_no_suites_teach_both_answers():
    """POPE's rows alternate yes / no: a thinned POPE must still hold both (a model taught one
    answer says it to every question, and its utility is the prior, not the picture)."""
    rng = random.Random(0)
    answers = [i.render(rng).answer.lower() for i in tiny_skills.utility_items(seeds=(1, 2)) if "pope" in i.profile_id]
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_grounding_answers_are_true_of_their_picture():
    rng = random.Random(0)
    samples = [i.render(rng) for i in tiny_skills.grounding_items(n_pictures=20, seed="test")]
    assert len(samples) == 20 * 5 and len({s.image for s in samples}) == 20
    for k in range(0, len(samples), 5):
        description, *cells = samples[k : k + 5]
        assert description.text == tiny_skills.DESCRIBE and len({s.image for s in samples[k : k + 5]}) == 1
        shown = [s.answer for s in cells if s.answer != "nothing"]
        assert 1 <= len(shown) <= 4 and description.answer.count(" at the ") == len(shown)
        assert all(
            f"{a} at the {s.text.split('at the ')[1].removesuffix(' of the image?')}" in description.answer
            for a, s in ((s.answer, s) for s in cells if s.answer != "nothing")
        )
