"""MMUnlearner's CLEAR multiple choice: prompt text, seed-42 option order (checked against the
global `random` module driven the way CLEAR_eval.py drives it) and the answer parser."""

from __future__ import annotations

import random

import pytest

from mmunlearn.harness.core.mmunlearner_choice import (
    CAPTION_QUESTIONS,
    IDENTITY_QUESTION,
    ChoiceItem,
    OptionOrder,
    build_items,
    choice_question,
    correct_letter,
    format_prompt,
    is_correct,
    option_letter,
    option_lists,
    parse_choice,
)

SAMPLES = [
    ("Ann Lee", ["Bo Chan", "Cy Diaz", "Di Eng"]),
    ("Ed Fox", ["Fay Gu", "Gil Ho", "Hal Ito"]),
    ("Ida Joy", ["Jo Kay", "Kim Lu", "Lin Ma"]),
    ("Mo Ng", ["Ned Oz", "Ola Pi"]),
    ("Pat Qu", ["Quin Ro", "Ray Su", "Sam Tu", "Tia Uy", "Uma Vo"]),
    ("Val Wu", []),
] * 5


@pytest.fixture
def global_random():
    """Drive the global `random` module as upstream does, then put its state back."""
    state = random.getstate()
    yield random
    random.setstate(state)


def _upstream(rng, samples, caption_draws_after=None):
    """What CLEAR_eval.py:19, :59-60 does with the global generator (plus optional
    random.choice draws of CLEAR_process.py:74 after sample index `caption_draws_after[0]`)."""
    rng.seed(42)
    out = []
    for i, (answer, wrong) in enumerate(samples):
        options = list(wrong)
        options.insert(rng.randint(0, len(options)), answer)
        out.append(options)
        if caption_draws_after and i == caption_draws_after[0]:
            for _ in range(caption_draws_after[1]):
                rng.choice(list(CAPTION_QUESTIONS))
    return out


def test_option_order_matches_global_random(global_random):
    expected = _upstream(global_random, SAMPLES)
    got = option_lists(SAMPLES)
    assert [opts for opts, _ in got] == expected
    assert [letter for _, letter in got] == ["ABCDEFG"[opts.index(a)] for opts, (a, _) in zip(expected, SAMPLES)]


def test_option_order_with_interleaved_caption_draws(global_random):
    # one process, forget MC (first 7 samples), then a generation set drawing 11 caption questions
    expected = _upstream(global_random, SAMPLES, caption_draws_after=(6, 11))
    order = OptionOrder(42)
    got = []
    for i, (answer, wrong) in enumerate(SAMPLES):
        got.append(order.insert(answer, wrong)[0])
        if i == 6:
            drawn = order.draw_caption_questions(11)
            assert len(drawn) == 11 and set(drawn) <= set(CAPTION_QUESTIONS)
    assert got == expected


def test_option_order_literal_first_three():
    # random.seed(42); randint(0, 3) three times gives 0, 0, 2
    got = option_lists(SAMPLES[:3])
    assert got == [
        (["Ann Lee", "Bo Chan", "Cy Diaz", "Di Eng"], "A"),
        (["Ed Fox", "Fay Gu", "Gil Ho", "Hal Ito"], "A"),
        (["Jo Kay", "Kim Lu", "Ida Joy", "Lin Ma"], "C"),
    ]


def test_option_order_does_not_touch_inputs_or_global_state(global_random):
    global_random.seed(7)
    before = global_random.getstate()
    wrong = ["Bo Chan", "Cy Diaz"]
    OptionOrder().insert("Ann Lee", wrong)
    assert wrong == ["Bo Chan", "Cy Diaz"]
    assert global_random.getstate() == before


def test_prompt_text():
    assert (
        format_prompt(IDENTITY_QUESTION, ["Ann Lee", "Bo Chan", "Cy Diaz"])
        == "What is the name of the person in the image?\nA. Ann Lee\nB. Bo Chan\nC. Cy Diaz\n"
    )
    # real_world: the row's own question, same layout, no instruction line
    assert format_prompt("Which city is this?", ["Paris", "Rome"]) == "Which city is this?\nA. Paris\nB. Rome\n"
    with pytest.raises(ValueError, match="at least one option"):
        format_prompt("q", [])


def test_build_items():
    items = build_items([(IDENTITY_QUESTION, a, w) for a, w in SAMPLES[:3]])
    assert items[2] == ChoiceItem(
        IDENTITY_QUESTION,
        ("Jo Kay", "Kim Lu", "Ida Joy", "Lin Ma"),
        "C",
        "What is the name of the person in the image?\nA. Jo Kay\nB. Kim Lu\nC. Ida Joy\nD. Lin Ma\n",
    )


def test_choice_question():
    assert choice_question({"name": "Ann"}) == "What is the name of the person in the image?"
    assert choice_question({"question": "Which city is this?"}) == "Which city is this?"
    with pytest.raises(ValueError, match="not a string"):
        choice_question({"question": None})


def test_letters_and_first_occurrence():
    assert [option_letter(i) for i in range(8)] == list("ABCDEFGH")
    assert option_letter(25) == "Z"
    with pytest.raises(ValueError, match="no letter"):
        option_letter(26)
    with pytest.raises(ValueError, match="exceed"):
        OptionOrder().insert("x", [str(i) for i in range(26)])
    # options.index: a duplicate of the answer earlier in the list takes the letter
    assert correct_letter(["Bo", "Ann", "Ann"], "Ann") == "B"
    with pytest.raises(ValueError, match="not among the options"):
        correct_letter(["Bo"], "Ann")


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        (" b) Paris", "B"),
        ("", None),
        ("  .)", None),
        ("**C**", "C"),
        ("The answer is B", "T"),  # only the first surviving character counts
        ("2", "2"),
    ],
)
def test_parse_choice(text, letter):
    assert parse_choice(text) == letter


def test_is_correct():
    assert is_correct(" b) Paris", "B")
    assert not is_correct("", "A")
    assert not is_correct("The answer is B", "B")
