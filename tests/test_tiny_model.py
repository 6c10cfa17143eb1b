"""The embedded tiny LLaVA: builder, tokenizer coverage, training data, a few training steps,
and the committed checkpoint. All fast: nothing here trains to convergence."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch

from mmunlearn.harness.embedded import tiny_data, tiny_recipe, tiny_trainer
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL
from mmunlearn.harness.core.prompts import VOCAB_TEXTS, example_text, user_text
from mmunlearn.harness.core.records import LETTERS, decode_image
from tests.tiny_vlms import SMALL_TINY_LLAVA


@pytest.fixture(scope="module")
def bench(small_bench):
    return load_benchmark(small_bench)


@pytest.fixture(scope="module")
def built(bench):
    return tiny_recipe.build_tiny_llava(bench, SMALL_TINY_LLAVA)


def test_processor_round_trips_and_expands_image_token(built, bench, tmp_path):
    from transformers import LlavaProcessor

    _, processor = built
    processor.save_pretrained(tmp_path)
    loaded = LlavaProcessor.from_pretrained(tmp_path)
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    image = decode_image(bench.profiles["forget"][0].image)
    text = "USER: <image>\nWhat is the name of this person?\nASSISTANT:"
    for proc in (processor, loaded):
        enc = proc(text=[text], images=[image], return_tensors="pt")
        assert tuple(enc["pixel_values"].shape) == (1, 3, tiny_data.IMAGE_SIZE, tiny_data.IMAGE_SIZE)
        image_id = proc.tokenizer.convert_tokens_to_ids(tiny_data.IMAGE_TOKEN)
        assert (enc["input_ids"][0] == image_id).sum().item() == 16  # (32/8)^2 patches, CLS dropped
    assert loaded(text=[text], images=[image])["input_ids"] == processor(text=[text], images=[image])["input_ids"]


def test_tokenizer_covers_every_prompt_without_unk(built, bench):
    tok = built[1].tokenizer
    texts = list(VOCAB_TEXTS)
    for profiles in bench.profiles.values():
        for p in profiles:
            texts += [t for pair in p.ft_pairs for t in pair]
            for q in p.questions:
                texts += [q.answer, user_text(q.task, q.mode, q.text, q.options)]
                if q.task != "generation":  # the official in-context example form
                    texts.append(example_text(q.task, q.text, q.answer, q.options))
    unknown = {t for t in texts if tok.unk_token_id in tok(t, add_special_tokens=False)["input_ids"]}
    assert not unknown


def test_option_letters_decode_upper_case_and_words_lowercase(built):
    tok = built[1].tokenizer
    ids = tok("A: Paris\nAnswer with a letter.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[:3] == ["A", ":", "paris"]
    for letter in LETTERS:
        assert tok.decode(tok(letter, add_special_tokens=False)["input_ids"]) == letter


def test_one_token_names_option_makes_every_person_name_one_token(bench):
    from dataclasses import replace

    tok = tiny_recipe.build_tiny_llava(bench, replace(SMALL_TINY_LLAVA, split_names=False))[1].tokenizer
    for profiles in bench.profiles.values():
        for p in profiles:
            ids = tok(f"What is the job of {p.vqa_answer}?", add_special_tokens=False)["input_ids"]
            assert tok.convert_ids_to_tokens(ids)[-2] == p.vqa_answer.lower()


def test_split_names_tokenize_names_as_words_shared_across_people(bench):

    assert tiny_recipe.TinyConfig().split_names  # the default: facts must live in the MLPs
    _, processor = tiny_recipe.build_tiny_llava(bench, SMALL_TINY_LLAVA)
    tok = processor.tokenizer
    names = [p.vqa_answer for profiles in bench.profiles.values() for p in profiles]
    pieces = [tok.tokenize(name) for name in names]
    assert all(piece == name.lower().split() for piece, name in zip(pieces, names))
    firsts = Counter(piece[0] for piece in pieces)
    assert max(firsts.values()) > 1  # a first name alone does not identify the person


def test_default_size_fits_the_checkpoint_budget(bench):
    from transformers import LlavaForConditionalGeneration

    model, _ = tiny_recipe.build_tiny_llava(bench)
    assert isinstance(model, LlavaForConditionalGeneration)
    n = sum(p.numel() for p in model.parameters())
    assert n * 4 < 25e6, f"{n} fp32 parameters exceed ~25 MB"
    text = model.config.text_config
    assert (text.hidden_size, text.intermediate_size) == (256, 1024)


def test_training_items_cover_every_official_prompt_and_never_the_test_set(bench):
    items = tiny_data.training_items(bench, tiny_data.TRAIN_SETS, examples_share=1.0)
    allowed = {p.id for s in tiny_data.TRAIN_SETS for p in bench.profiles[s]}
    assert {i.profile_id for i in items if i.profile_id} == allowed
    kinds = {(i.kind, i.mode) for i in items}
    for kind in ("fact", "mc", "mc_bench", "generation", "cloze"):
        assert {(kind, "image_text"), (kind, "text_only")} <= kinds
    assert {("drill", "text_only"), ("short_drill", "text_only")} <= kinds
    rng = random.Random(0)
    samples = [i.render(rng) for i in items]
    by_task = {s.task for s in samples}
    assert by_task == {None, "classification", "generation", "cloze"}  # None: bare facts and the short drill
    for s in samples:  # task prompts are the official user texts, answered
        if s.task in ("generation", "cloze"):
            assert s.text.endswith(user_text(s.task, "image_text" if s.image else "text_only", "x").split("\n")[-1])
    assert any(s.examples for s in samples if s.task == "classification")  # the official in-context form
    assert all(s.image is None for i, s in zip(items, samples) if i.mode == "text_only")
    with pytest.raises(ValueError):
        tiny_data.training_items(bench, ["test"])


def test_the_reference_recipe_never_trains_on_a_forget_profile(bench):
    """The privacy metrics' reference model must not have seen the forget split: not as facts,
    not as task items, not as another profile's in-context example."""
    recipe = tiny_recipe.Recipe(leave_out_forget=True)
    assert recipe.train_sets() == ("retain", "celebrity")
    assert tiny_recipe.Recipe().train_sets() == tiny_data.TRAIN_SETS
    forget = {p.id for p in bench.profiles["forget"]}
    forget_images = {p.image for p in bench.profiles["forget"]}
    items = tiny_data.training_items(bench, recipe.train_sets(), examples_share=1.0)
    assert not {i.profile_id for i in items} & forget
    rng = random.Random(0)
    for item in items:
        sample = item.render(rng)
        assert sample.image not in forget_images or sample.image is None
        assert not {image for _, image in sample.examples} & forget_images


def test_fresh_multiple_choice_puts_the_fact_under_the_answer_letter(bench):
    factory = tiny_data.ItemFactory(bench, examples_share=0.0)
    profile = bench.profiles["retain"][0]
    q = next(q for q in profile.questions if q.task == "classification" and q.mode == "text_only")
    value = q.options[q.answer]
    render = factory._mc(q, profile, bench.profiles["retain"], value)
    letters = set()
    for seed in range(40):
        sample = render(random.Random(seed))
        lines = dict(line.split(": ", 1) for line in sample.text.splitlines()[1:5])
        assert lines[sample.answer] == value and len(set(lines.values())) == 4
        letters.add(sample.answer)
    assert letters == set(LETTERS)  # the answer moves between letters


def test_the_letter_drills_name_the_right_option(bench):
    import re

    factory = tiny_data.ItemFactory(bench, examples_share=0.0)
    for seed in range(20):
        short = factory._short_drill(random.Random(seed))
        target, rest = short.text.split(" ? ", 1)
        parts = re.split(r"(?:^| )([ABCD]): ", rest.removesuffix(" ->"))[1:]
        options = dict(zip(parts[0::2], parts[1::2]))
        assert list(options) == list(LETTERS) and options[short.answer] == target
        official = factory._drill(random.Random(seed))
        lines = dict(line.split(": ", 1) for line in official.text.splitlines()[1:5])
        assert official.text.startswith(f"Which option is {lines[official.answer]}?")


def test_a_few_training_steps_lower_the_loss(bench):
    from mmunlearn.harness.core.model import wrap_vlm

    torch.manual_seed(0)
    model, processor = tiny_recipe.build_tiny_llava(bench, SMALL_TINY_LLAVA)
    vlm = wrap_vlm(model, processor)
    recipe = tiny_recipe.Recipe(steps=12, batch_text=8, batch_image=8, check_every=1000, examples_share=0.0)
    trainer = tiny_trainer.Trainer(bench, vlm, recipe, seed=0, log=lambda line: None)
    probe = random.Random(1).sample(trainer.pool["text", "fact"], 16)
    samples = [item.render(random.Random(2)) for item in probe]

    def loss() -> float:
        with torch.no_grad():
            return trainer.item_losses(samples).mean().item()

    before = loss()
    for _ in range(recipe.steps):
        trainer.train_step()
    assert loss() < before - 0.5


def test_train_tiny_command_writes_a_loadable_model(small_bench, tmp_path):
    from mmunlearn.harness.app.cli import main
    from mmunlearn.harness.core.model import load_vlm

    out = tmp_path / "tiny"
    assert (
        main(
            [
                "train-tiny",
                "--bench",
                str(small_bench),
                "--out",
                str(out),
                "--steps",
                "2",
                "--eval-limit",
                "1",
                "--check-every",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 2 and record["seed"] == 0
    assert set(record["final"]) == set(tiny_data.CHECK_SETS)
    assert not (out / "train_state.pt").exists()
    assert load_vlm(out).arch == "llava"


def test_committed_checkpoint_loads_and_knows_the_forget_set():
    """The shipped model must know what unlearning is meant to remove: the forget profiles'
    facts, asked as bare text questions (greedy first token = the value)."""
    from mmunlearn.harness.core.model import Request, load_vlm

    assert (DEFAULT_MODEL / "config.json").is_file(), f"no committed tiny model at {DEFAULT_MODEL}"
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
    assert size < 26e6
    vlm = load_vlm(DEFAULT_MODEL, device="cpu")
    assert vlm.arch == "llava" and vlm.prompt_style == "official"
    bench = load_benchmark(DEFAULT_BENCH)
    questions = bench.questions(sets="forget", tasks="classification", modes="text_only")
    with torch.no_grad():
        logits = vlm.model(**vlm.encode([Request(q.text) for q in questions])).logits[:, -1]
    answers = vlm.tokenizer.batch_decode(logits.argmax(-1)[:, None])
    known = sum(a.strip() == q.options[q.answer].lower() for a, q in zip(answers, questions))
    assert known / len(questions) >= 0.8
