"""mmunlearn.harness.core.mmmu_eval against the official MMMU code and lmms-eval 0.7.3.

Every expected prompt, letter and number below is written out literally from the upstream
behaviour (MMMU-Benchmark/MMMU @ bb0b95a mmmu/utils/{data_utils,eval_utils}.py with
mmmu/configs/llava1.5.yaml; lmms-eval 0.7.3 tasks/mmmu/utils.py and _task_utils/mmmu_mcq_utils.py),
never computed with the module under test: a changed space, newline or parsing pass must fail here.
"""

from __future__ import annotations

import random

import pytest

from mmunlearn.harness.core.mmmu_eval import (
    DOMAINS,
    LMMS_EVAL,
    OFFICIAL,
    PROTOCOLS,
    SUBJECTS,
    OfficialRandom,
    accuracy_per_subject,
    choice_info,
    eval_multi_choice,
    eval_open,
    extract_numbers,
    lmms_eval_open,
    lmms_eval_rng,
    lmms_parse_multi_choice,
    lmms_prompt,
    normalize_str,
    official_gold,
    official_prompt,
    official_rng,
    option_letters,
    parse_multi_choice,
    parse_open,
    parse_options,
    prompt_for,
    score_response,
    subject_of,
)

BAXTER_Q = (
    "<image 1> Baxter Company has a relevant range of production between 15,000 and 30,000 units. "
    "The following cost data represents average variable costs per unit for 25,000 units of production. "
    "If 30,000 units are produced, what are the per unit manufacturing overhead costs incurred?"
)
BAXTER_OPTIONS = "['$6', '$7', '$8', '$9']"
ABCD = ["A", "B", "C", "D"]
FOUR = {"A": "$6", "B": "$7", "C": "$8", "D": "$9"}
# Options for the research note's "USA" case: B's content occurs in the response.
COUNTRIES = {"A": "Mexico", "B": "the United States of America", "C": "Canada", "D": "Brazil"}
USA = "The flag in the image belongs to the United States of America, i.e. the USA here"


# ------------------------------------------------------------------------------------ constants
def test_protocol_names():
    assert OFFICIAL == "mmmu"
    assert LMMS_EVAL == "mmmu-lmms-eval"
    assert PROTOCOLS == ("mmmu", "mmmu-lmms-eval")


def test_subjects_are_the_30_official_configs():
    assert len(SUBJECTS) == 30 == len(set(SUBJECTS))
    assert SUBJECTS[:3] == ("Accounting", "Agriculture", "Architecture_and_Engineering")
    assert SUBJECTS[-3:] == ("Psychology", "Public_Health", "Sociology")
    assert "Diagnostics_and_Laboratory_Medicine" in SUBJECTS and "Manage" in SUBJECTS
    assert sorted(s for subs in DOMAINS.values() for s in subs) == sorted(SUBJECTS)


def test_subject_of_ids():
    assert subject_of("validation_Accounting_1") == "Accounting"
    assert subject_of("validation_Art_Theory_12") == "Art_Theory"
    assert subject_of("dev_Diagnostics_and_Laboratory_Medicine_3") == "Diagnostics_and_Laboratory_Medicine"
    for bad in ("validation_Astrology_1", "Accounting", "validation_Accounting_x"):
        with pytest.raises(ValueError):
            subject_of(bad)


# ------------------------------------------------------------------------------------ options
def test_parse_options_reads_the_list_string():
    assert parse_options(BAXTER_OPTIONS) == ["$6", "$7", "$8", "$9"]
    assert parse_options('["It\'s <image 2>", "b"]') == ["It's <image 2>", "b"]
    assert parse_options("[]") == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("['a', 'b'", "not a Python list literal"),
        ("__import__('os').getcwd()", "not a Python list literal"),
        ("('a', 'b')", "must hold a list"),
        ("'a'", "must hold a list"),
        ("['a', 2]", "option 1 is not a string"),
    ],
)
def test_parse_options_rejects_safely(text, words):
    with pytest.raises(ValueError, match=words):
        parse_options(text)


def test_option_letters_and_choice_info():
    assert option_letters(5) == ["A", "B", "C", "D", "E"]
    assert option_letters(0) == []
    with pytest.raises(ValueError):
        option_letters(27)
    assert choice_info(BAXTER_OPTIONS) == (FOUR, ABCD)


# ------------------------------------------------------------------------------------ prompts
def test_official_prompt_four_options_to_the_character():
    expected = (
        "<image 1> Baxter Company has a relevant range of production between 15,000 and 30,000 units. "
        "The following cost data represents average variable costs per unit for 25,000 units of production. "
        "If 30,000 units are produced, what are the per unit manufacturing overhead costs incurred?\n"
        "(A) $6\n(B) $7\n(C) $8\n(D) $9\n"
        "\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert official_prompt(BAXTER_Q, BAXTER_OPTIONS, "multiple-choice") == expected
    assert official_prompt(BAXTER_Q, ["$6", "$7", "$8", "$9"], "multiple-choice") == expected
    assert prompt_for("mmmu", BAXTER_Q, BAXTER_OPTIONS, "multiple-choice") == expected


def test_official_prompt_five_options_keeps_image_placeholders():
    got = official_prompt(
        "Which image shows <image 1> best?", "['<image 2>', '<image 3>', 'red', 'blue {x}', 'none']", "multiple-choice"
    )
    assert got == (
        "Which image shows <image 1> best?\n(A) <image 2>\n(B) <image 3>\n(C) red\n(D) blue {x}\n(E) none\n\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_official_prompt_open():
    assert official_prompt("What is the value of x in <image 1>?", "[]", "open") == (
        "What is the value of x in <image 1>?\nAnswer the question using a single word or phrase."
    )
    # answer_dict_val.json calls open questions "short-answer"
    assert official_prompt("Q?", "[]", "short-answer") == "Q?\nAnswer the question using a single word or phrase."
    with pytest.raises(ValueError):
        official_prompt("Q?", "[]", "multiple_choice")
    with pytest.raises(ValueError):
        official_prompt("Q?", "[]", "multiple-choice")


def test_lmms_prompts_to_the_character():
    assert lmms_prompt("<image 1> Q?", BAXTER_OPTIONS, "multiple-choice") == (
        "<image 1> Q?\nA. $6\nB. $7\nC. $8\nD. $9\n\nAnswer with the option's letter from the given choices directly."
    )
    assert lmms_prompt("<image 1> Q?", "['a', 'b', 'c', 'd', 'e']", "multiple-choice") == (
        "<image 1> Q?\nA. a\nB. b\nC. c\nD. d\nE. e\n\nAnswer with the option's letter from the given choices directly."
    )
    assert lmms_prompt("<image 1> Q?", "[]", "open") == (
        "<image 1> Q?\n\nAnswer the question using a single word or phrase."
    )
    assert lmms_prompt("<image 1> or <image 7>?", "[]", "open", interleaved=True) == (
        "<image> or <image>?\n\nAnswer the question using a single word or phrase."
    )
    assert (
        prompt_for("mmmu-lmms-eval", "Q?", "[]", "open") == "Q?\n\nAnswer the question using a single word or phrase."
    )
    with pytest.raises(ValueError, match="unknown MMMU protocol"):
        prompt_for("lmms-eval", "Q?", "[]", "open")


# ------------------------------------------------------------------------------------ multiple choice
@pytest.mark.parametrize("parse", [parse_multi_choice, lmms_parse_multi_choice])
@pytest.mark.parametrize(
    "response, letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("The answer is B.", "B"),
        ("(A) is wrong, the answer is (C).", "C"),  # several: the one occurring last
        ("(B) $7", "B"),
    ],
)
def test_letters_both_protocols(parse, response, letter):
    assert parse(response, ABCD, FOUR, random.Random(1)) == (letter, False)


def test_unparseable_response_falls_back_to_seed_42_in_order():
    # random.seed(42); [random.choice(["A","B","C","D"]) for _ in range(3)] == ["A", "A", "C"]
    rng = official_rng()
    assert parse_multi_choice("**B**", ABCD, FOUR, rng) == ("A", True)
    assert parse_multi_choice("I cannot answer.", ABCD, FOUR, rng) == ("A", True)
    assert parse_multi_choice("B", ABCD, FOUR, rng) == ("B", False)  # draws nothing
    assert parse_multi_choice("", ABCD, FOUR, rng) == ("C", True)
    # deterministic: a fresh generator replays the same guesses
    assert parse_multi_choice("**B**", ABCD, FOUR, official_rng()) == ("A", True)
    assert parse_multi_choice("**B**", ABCD, FOUR, OfficialRandom()) == ("A", True)
    # five options: random.seed(42); [random.choice("ABCDE") for _ in range(4)] == ["A", "A", "C", "B"]
    five = dict(zip("ABCDE", "vwxyz"))
    rng5 = official_rng()
    assert [parse_multi_choice("**B**", list("ABCDE"), five, rng5)[0] for _ in range(4)] == ["A", "A", "C", "B"]


def test_lmms_fallback_is_seed_0():
    # random.seed(0); [random.choice(["A","B","C","D"]) for _ in range(3)] == ["D", "D", "A"]
    rng = lmms_eval_rng()
    assert [lmms_parse_multi_choice("**B**", ABCD, FOUR, rng) for _ in range(3)] == [
        ("D", True),
        ("D", True),
        ("A", True),
    ]


def test_usa_sentence_official_by_content_lmms_by_letter():
    assert parse_multi_choice(USA, ABCD, COUNTRIES, random.Random(1)) == ("B", False)
    assert lmms_parse_multi_choice(USA, ABCD, COUNTRIES, random.Random(1)) == ("A", False)


def test_option_contents_only_past_five_tokens():
    five_tokens = "the United States of America"
    assert parse_multi_choice(five_tokens, ABCD, COUNTRIES, official_rng()) == ("A", True)  # guessed
    assert parse_multi_choice("It is the United States of America", ABCD, COUNTRIES, official_rng()) == ("B", False)
    # several contents: the one occurring last, case-insensitively
    assert parse_multi_choice("not canada or mexico, it is BRAZIL", ABCD, COUNTRIES, official_rng()) == ("D", False)


def test_punctuation_is_stripped_one_character_after_the_other():
    # "B.'": "." is not at an end when "." is stripped, so "B." stays: no " B " -> guess.
    assert parse_multi_choice("B.'", ABCD, FOUR, official_rng()) == ("A", True)
    # lmms-eval's extra "B." pass finds it.
    assert lmms_parse_multi_choice("B.'", ABCD, FOUR, official_rng()) == ("B", False)
    assert parse_multi_choice("'B'", ABCD, FOUR, official_rng()) == ("B", False)


def test_parser_rejects_empty_choices():
    with pytest.raises(ValueError, match="all_choices is empty"):
        parse_multi_choice("B", [], {}, official_rng())


# ------------------------------------------------------------------------------------ open answers
def test_normalize_and_numbers():
    assert normalize_str(" 1,000.456 ") == [1000.46]
    assert normalize_str("MgS") == ["mgs"]
    assert normalize_str("C") == [" c", "c "]
    # as upstream: the plain-number pattern also yields the "234" of "1,234" and the "5" of "3e5"
    assert extract_numbers("x = 1,234 or 3e5 or -2.5 and .5") == ["1,234", "3e5", "234", "5", "-2.5", ".5"]


def test_parse_open_official():
    assert parse_open("Therefore the answer is 1.06") == [1.06]
    assert parse_open("Therefore the answer is 1.06.") == [1.06]
    assert parse_open("MgS") == ["mgs"]
    assert parse_open("The value is 5.\nSo the answer is 7") == [5.0, 7.0]
    # lower-cased before the sentence split: only newlines split, so "5" is lost here
    assert parse_open("It is 5. So it is 7") == [7.0]
    assert parse_open("x = 12") == [12.0]  # "=" counts in the last line


def test_eval_open_numbers():
    preds = parse_open("Therefore the answer is 1.06")
    assert eval_open("1.06", preds) is True
    assert eval_open("1.060", preds) is True
    assert eval_open("1.07", preds) is False
    assert eval_open("1000", parse_open("The result is 1,000")) is True
    assert eval_open("3.429", parse_open("3.43")) is True  # both rounded to 2 decimals
    assert eval_open("5", parse_open("It is 5. So it is 7")) is False


def test_eval_open_strings_and_single_letters():
    assert eval_open("C", parse_open("C")) is True
    assert eval_open("C", parse_open("ABC")) is False
    assert eval_open("Transformation", parse_open("The process is called transformation")) is True
    with pytest.raises(ValueError):
        eval_open("1.06", "1.06")


def test_list_golds_official_match_lmms_does_not():
    assert official_gold("['$MgS$','MgS']") == ["$MgS$", "MgS"]
    assert official_gold("[0, 1]") == "[0, 1]"  # not a list of strings: left alone
    assert official_gold("1.06") == "1.06"
    assert eval_open("['$MgS$','MgS']", parse_open("MgS")) is True
    assert eval_open(["$MgS$", "MgS"], parse_open("MgS")) is True
    assert eval_open("['24/7','3.429']", parse_open("The answer is 3.429")) is True
    assert lmms_eval_open("['$MgS$','MgS']", parse_open("MgS")) is False
    assert lmms_eval_open("['24/7','3.429']", parse_open("The answer is 3.429")) is False
    assert lmms_eval_open("1.060", parse_open("Therefore the answer is 1.06")) is True


def test_eval_multi_choice():
    assert eval_multi_choice("B", "B") is True
    assert eval_multi_choice("B", "b") is False
    assert eval_multi_choice(["A", "B"], "B") is True


# ------------------------------------------------------------------------------------ scoring
def test_score_response_both_protocols():
    rng = official_rng()
    s = score_response(
        "mmmu",
        question_type="multiple-choice",
        response=USA,
        answer="B",
        options=str(list(COUNTRIES.values())),
        rng=rng,
    )
    assert (s.correct, s.prediction, s.guessed) == (True, "B", False)
    s = score_response(
        "mmmu-lmms-eval",
        question_type="multiple-choice",
        response=USA,
        answer="B",
        options=list(COUNTRIES.values()),
        rng=lmms_eval_rng(),
    )
    assert (s.correct, s.prediction, s.guessed) == (False, "A", False)
    s = score_response(
        "mmmu", question_type="multiple-choice", response="**B**", answer="A", options=BAXTER_OPTIONS, rng=rng
    )
    assert (s.correct, s.prediction, s.guessed) == (True, "A", True)
    s = score_response("mmmu", question_type="open", response="MgS", answer="['$MgS$','MgS']", options="[]", rng=rng)
    assert (s.correct, s.prediction, s.guessed) == (True, ["mgs"], False)
    s = score_response(
        "mmmu-lmms-eval", question_type="open", response="MgS", answer="['$MgS$','MgS']", options="[]", rng=rng
    )
    assert s.correct is False


def test_accuracy_per_subject():
    records = [
        {"id": "validation_Accounting_1", "correct": True, "guessed": False},
        {"id": "validation_Accounting_2", "correct": False, "guessed": True},
        {"id": "validation_Accounting_3", "correct": True, "guessed": True},
        {"id": "validation_Chemistry_30", "correct": True},
        {"subject": "Art", "correct": False, "guessed": False},
    ]
    got = accuracy_per_subject(records)
    assert got["subjects"] == {
        "Accounting": {"num": 3, "correct": 2, "acc": 2 / 3, "guessed": 2},
        "Art": {"num": 1, "correct": 0, "acc": 0.0, "guessed": 0},
        "Chemistry": {"num": 1, "correct": 1, "acc": 1.0, "guessed": 0},
    }
    assert list(got["subjects"]) == ["Accounting", "Art", "Chemistry"]
    assert got["domains"] == {
        "Art and Design": {"num": 1, "correct": 0, "acc": 0.0, "guessed": 0},
        "Business": {"num": 3, "correct": 2, "acc": 2 / 3, "guessed": 2},
        "Science": {"num": 1, "correct": 1, "acc": 1.0, "guessed": 0},
    }
    # overall = correct / total = 3 / 5, not the mean of the subject accuracies (5/9)
    assert got["overall"] == {"num": 5, "correct": 3, "acc": 0.6, "guessed": 2}


def test_accuracy_per_subject_rejects_bad_records():
    with pytest.raises(ValueError, match="no records"):
        accuracy_per_subject([])
    with pytest.raises(ValueError, match="unknown MMMU subject"):
        accuracy_per_subject([{"subject": "Astrology", "correct": True}])
    with pytest.raises(ValueError, match="bools"):
        accuracy_per_subject([{"subject": "Art", "correct": 1}])
    with pytest.raises(ValueError, match="neither"):
        accuracy_per_subject([{"correct": True}])
