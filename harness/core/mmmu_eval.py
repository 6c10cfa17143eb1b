"""MMMU scoring as pure functions: the official protocol (``"mmmu"``) and the lmms-eval 0.7.3
variant (``"mmmu-lmms-eval"``), each reproducing its upstream to the character.

Written from the upstream code, not copied from it. References:

* ``MMMU-Benchmark/MMMU`` @ bb0b95a (files last changed in aa9b70d):
  ``mmmu/utils/data_utils.py`` (CAT_SHORT2LONG 19-50, DOMAIN_CAT2SUB_CAT 9-16,
  get_multi_choice_info 58-71, construct_prompt 136-174), ``mmmu/utils/eval_utils.py``
  (``random.seed(42)`` 6, parse_multi_choice_response 10-62, check_is_number 65-74, normalize_str
  76-98, extract_numbers 100-120, parse_open_response 122-171, eval_multi_choice 175-189,
  eval_open 191-216, evaluate 219-241, calculate_ins_level_acc 246-255),
  ``mmmu/configs/llava1.5.yaml`` (the templates), ``mmmu/run_llava.py`` (config handling 67-71,
  dataset order 74-80, parsing during generation 19-30), ``mmmu/main_eval_only.py`` and
  ``mmmu/answer_dict_val.json`` (how golds are scored).
* ``lmms-eval`` 0.7.3 (the PyPI wheel; the repository at 75571cfe still says 0.7.2):
  ``lmms_eval/tasks/mmmu/utils.py`` (parse_options 68-71, construct_prompt 74-84,
  mmmu_doc_to_text 87-97, mmmu_process_results 193-206 of the wheel, evaluate_mmmu 388-415 of the
  wheel), ``lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py`` (parse_mmmu_multi_choice_response
  17-65), ``lmms_eval/tasks/mmmu/mmmu_val.yaml`` (prompts), ``lmms_eval/evaluator.py``
  (``random.seed(random_seed=0)`` 472-475, ``process_docs_parallel=4`` 404).

What the two protocols share and where they differ
---------------------------------------------------
Shared: open-answer parsing (:func:`parse_open`), :func:`normalize_str`, :func:`eval_multi_choice`,
the open-answer comparison and per-subject/overall accuracy.

Different:

==========================  ========================================  ======================================
                            ``"mmmu"`` (official)                     ``"mmmu-lmms-eval"`` (0.7.3)
==========================  ========================================  ======================================
multiple-choice prompt      ``q\\n(A) o1\\n(B) o2\\n\\nAnswer ...``      ``q\\nA. o1\\nB. o2\\n\\nAnswer ...``
open prompt                 ``q\\nAnswer the question using ...``     ``q\\n\\nAnswer the question using ...``
letter pass 2               ``" A "`` (space both sides)              ``"A "`` (trailing space only)
letter pass 3               none                                      ``"A."``
random fallback             ``random.seed(42)``, dataset order        ``random.seed(0)``, see below
list golds                  lists (``['$MgS$', 'MgS']`` matches MgS)  the raw string: never matches
==========================  ========================================  ======================================

The random fallback
-------------------
A multiple-choice response from which no letter can be parsed gets a *random* letter
(``random.choice(all_choices)``), drawn from Python's global ``random`` generator. The official
code seeds it with 42 at import (eval_utils.py:6; run_llava.py:42 seeds it with 42 again) and
parses one question after another in dataset order: subjects in CAT_SHORT2LONG order (alphabetical,
run_llava.py:74-80 / main_parse_and_eval.py:24), rows in dataset order within a subject. Only
unparseable multiple-choice responses draw from it. So the guesses depend on the *order* in which
questions are parsed: to reproduce the official guesses, call :func:`parse_multi_choice` once per
multiple-choice question, in dataset order, with one :func:`official_rng` shared by the whole run.

lmms-eval seeds the global ``random`` with ``random_seed=0`` in ``simple_evaluate``
(evaluator.py:472-475), but 0.7.3 runs ``process_results`` in a thread pool of
``process_docs_parallel=4`` workers by default (evaluator.py:404, 1381), so which question gets
which draw depends on thread scheduling; only ``--process_docs_parallel 1`` (and no other draw
from ``random`` between seeding and scoring) gives the sequence of :func:`lmms_eval_rng`.
lmms-eval's own guessed answers are therefore not reproducible run to run; every other answer is.

Golds
-----
The HF dataset stores the three list golds of the validation split as list strings
(``"['$MgS$','MgS']"``). The official evaluator scores them as lists: ``mmmu/answer_dict_val.json``
(read by main_eval_only.py:20,61) and the example outputs (``example_outputs/*/Chemistry/output.json``)
hold real JSON lists, and eval_open (eval_utils.py:196-202) accepts any of the listed answers.
:func:`official_gold` turns a list string into that list; :func:`eval_open` applies it.
lmms-eval 0.7.3 passes ``doc["answer"]`` unchanged (utils.py:205 of the wheel), so the list string
is normalised as one string ("['$mgs$','mgs']") and never occurs in a response:
:func:`lmms_eval_open` keeps that behaviour.
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "OFFICIAL",
    "LMMS_EVAL",
    "PROTOCOLS",
    "SUBJECTS",
    "DOMAINS",
    "MULTIPLE_CHOICE",
    "OPEN",
    "MULTIPLE_CHOICE_INSTRUCTION",
    "OPEN_INSTRUCTION",
    "OFFICIAL_SEED",
    "LMMS_EVAL_SEED",
    "OfficialRandom",
    "official_rng",
    "lmms_eval_rng",
    "parse_options",
    "option_letters",
    "choice_info",
    "subject_of",
    "official_prompt",
    "lmms_prompt",
    "prompt_for",
    "parse_multi_choice",
    "lmms_parse_multi_choice",
    "check_is_number",
    "normalize_str",
    "extract_numbers",
    "parse_open",
    "official_gold",
    "eval_multi_choice",
    "eval_open",
    "lmms_eval_open",
    "Scored",
    "score_response",
    "accuracy_per_subject",
]

OFFICIAL = "mmmu"
LMMS_EVAL = "mmmu-lmms-eval"
PROTOCOLS: tuple[str, ...] = (OFFICIAL, LMMS_EVAL)

# The 30 subject configs of the hub dataset MMMU/MMMU, in the official order (the values of
# CAT_SHORT2LONG, data_utils.py:19-50; alphabetical). The official runner concatenates them in
# this order (run_llava.py:75-80), which is the order in which it parses.
SUBJECTS: tuple[str, ...] = (
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory",
    "Basic_Medical_Science", "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science",
    "Design", "Diagnostics_and_Laboratory_Medicine", "Economics", "Electronics", "Energy_and_Power",
    "Finance", "Geography", "History", "Literature", "Manage",
    "Marketing", "Materials", "Math", "Mechanical_Engineering", "Music",
    "Pharmacy", "Physics", "Psychology", "Public_Health", "Sociology",
)  # fmt: skip

# DOMAIN_CAT2SUB_CAT (data_utils.py:9-16): the six disciplines the official tables group by.
DOMAINS: dict[str, tuple[str, ...]] = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": (
        "Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
        "Public_Health",
    ),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": (
        "Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics", "Energy_and_Power",
        "Materials", "Mechanical_Engineering",
    ),
}  # fmt: skip

MULTIPLE_CHOICE = "multiple-choice"
# The dataset says "open"; mmmu/answer_dict_val.json says "short-answer". Upstream treats every
# question_type other than "multiple-choice" as open (data_utils.py:140/162, main_eval_only.py:53);
# here anything else is an error, so that a misspelt "multiple_choice" is not silently scored as open.
OPEN = "open"
_OPEN_TYPES = frozenset({OPEN, "short-answer"})

# llava1.5.yaml after YAML folding (a blank line inside a double-quoted scalar folds to one "\n"):
#   multi_choice_example_format: "{}\n{}\nAnswer with the option's letter from the given choices directly."
#   short_ans_example_format:    "{}\nAnswer the question using a single word or phrase."
#   task_instructions: ""  (falsy, so no prefix: data_utils.py:156-159, 167-170)
# lmms-eval's mmmu_val.yaml uses the same two sentences as multiple_choice_prompt / open_ended_prompt.
MULTIPLE_CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."

OFFICIAL_SEED = 42  # eval_utils.py:6 (and run_llava.py --seed default 42, set_seed 32-45)
LMMS_EVAL_SEED = 0  # lmms_eval/evaluator.py simple_evaluate(random_seed=0), 393 and 472-475


class OfficialRandom(random.Random):
    """A private ``random.Random`` seeded like the official evaluator's global generator (42).

    ``OfficialRandom().choice(seq)`` draws what ``random.choice(seq)`` draws in a process that just
    ran ``random.seed(42)``: the module-level functions are methods of one hidden ``Random``.
    """

    def __init__(self, seed: int = OFFICIAL_SEED) -> None:
        super().__init__(seed)


def official_rng() -> random.Random:
    """A fresh generator in the state the official evaluator's is in before its first guess.

    Share one per evaluation run and parse the multiple-choice questions in dataset order (see the
    module docstring): the i-th unparseable response gets the i-th draw.
    """
    return OfficialRandom(OFFICIAL_SEED)


def lmms_eval_rng() -> random.Random:
    """``random.Random(0)``: lmms-eval's fallback sequence when it scores serially
    (``--process_docs_parallel 1``); with its default 4 worker threads the assignment of draws to
    questions is not deterministic (module docstring)."""
    return random.Random(LMMS_EVAL_SEED)


# ------------------------------------------------------------------------------------ options
def parse_options(text: str) -> list[str]:
    """The ``options`` column, a string holding a Python list of strings, as that list.

    Upstream reads it with ``eval`` (data_utils.py:138) or ``ast.literal_eval`` (lmms-eval
    utils.py:78); this uses ``ast.literal_eval`` and raises ``ValueError`` naming the problem
    for anything that is not a list of strings. A list passed in is checked and copied.
    """
    if isinstance(text, (list, tuple)):
        value: Any = list(text)
    elif isinstance(text, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise ValueError(
                f"options is not a Python list literal ({type(exc).__name__}: {exc}): {text[:80]!r}"
            ) from None
    else:
        raise ValueError(f"options must be a string holding a Python list, got {type(text).__name__}")
    if not isinstance(value, list):
        raise ValueError(f"options must hold a list, got {type(value).__name__}: {str(text)[:80]!r}")
    for i, option in enumerate(value):
        if not isinstance(option, str):
            raise ValueError(f"option {i} is not a string but {type(option).__name__}: {option!r}")
    return value


def option_letters(n: int) -> list[str]:
    """``["A", "B", ...]`` for ``n`` options (data_utils.py:64-69: ``chr(ord('A') + i)``).

    Upstream would go on past "Z" to "[" etc.; more than 26 options raises ``ValueError``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of options must be a non-negative int, got {n!r}")
    if n > 26:
        raise ValueError(f"{n} options: letters only go up to Z (26)")
    return [chr(ord("A") + i) for i in range(n)]


def choice_info(options: Sequence[str] | str) -> tuple[dict[str, str], list[str]]:
    """``(index2ans, all_choices)`` for the parser: ``{"A": option_0, ...}`` and ``["A", ...]``
    (get_multi_choice_info, data_utils.py:58-71; the same in construct_prompt 141-148 and in
    lmms-eval's mmmu_mcq_utils.py:7-14)."""
    opts = parse_options(options)  # type: ignore[arg-type]
    letters = option_letters(len(opts))
    return dict(zip(letters, opts)), letters


def subject_of(question_id: str) -> str:
    """The subject of an MMMU id: ``"validation_Art_Theory_12"`` -> ``"Art_Theory"``
    (main_eval_only.py:25: everything between the split and the number)."""
    parts = str(question_id).split("_")
    subject = "_".join(parts[1:-1])
    if subject not in SUBJECTS or not parts[-1].isdigit():
        raise ValueError(f"not an MMMU id of one of the 30 subjects: {question_id!r}")
    return subject


def _question_kind(question_type: str) -> str:
    if question_type == MULTIPLE_CHOICE:
        return MULTIPLE_CHOICE
    if question_type in _OPEN_TYPES:
        return OPEN
    raise ValueError(f"question_type must be 'multiple-choice' or 'open', got {question_type!r}")


# ------------------------------------------------------------------------------------ prompts
def official_prompt(question: str, options: Sequence[str] | str, question_type: str) -> str:
    """The official ``final_input_prompt`` (construct_prompt, data_utils.py:136-174, with the
    llava1.5.yaml templates), to the character; ``<image N>`` placeholders stay in the text.

    Multiple choice: the question, a newline, one ``"(X) option\\n"`` line per option (so the
    block ends in "\\n"), a newline, the instruction -- i.e. a blank line before the instruction::

        "{question}\\n(A) o1\\n(B) o2\\n\\nAnswer with the option's letter from the given choices directly."

    Open: ``"{question}\\nAnswer the question using a single word or phrase."`` (options ignored).
    The parser's ``index2ans`` / ``all_choices`` are :func:`choice_info` of the same options.
    """
    if _question_kind(question_type) == MULTIPLE_CHOICE:
        opts = parse_options(options)  # type: ignore[arg-type]
        if not opts:
            raise ValueError("a multiple-choice question needs at least one option")
        block = "".join(f"({letter}) {option}\n" for letter, option in zip(option_letters(len(opts)), opts))
        return f"{question}\n{block}\n{MULTIPLE_CHOICE_INSTRUCTION}"
    return f"{question}\n{OPEN_INSTRUCTION}"


def lmms_prompt(question: str, options: Sequence[str] | str, question_type: str, *, interleaved: bool = False) -> str:
    """lmms-eval 0.7.3 ``mmmu_val`` text (construct_prompt utils.py:74-84, parse_options 68-71,
    prompts from mmmu_val.yaml ``default``).

    Multiple choice: ``f"{question}\\n{options}\\n\\n{instruction}"`` with options ``"A. o1\\nB. o2"``
    (joined by "\\n", no trailing newline); open: ``f"{question}\\n\\n{instruction}"``.
    ``interleaved=True`` replaces ``<image 1>``..``<image 7>`` by ``<image>`` as lmms-eval does when
    ``metadata.interleaved_format`` is set -- which ``mmmu_doc_to_messages`` (chat models) does
    (utils.py:94-95, 139); with the default yaml and ``doc_to_text`` the placeholders stay.
    """
    if _question_kind(question_type) == MULTIPLE_CHOICE:
        opts = parse_options(options)  # type: ignore[arg-type]
        if not opts:
            raise ValueError("a multiple-choice question needs at least one option")
        block = "\n".join(f"{letter}. {option}" for letter, option in zip(option_letters(len(opts)), opts))
        text = f"{question}\n{block}\n\n{MULTIPLE_CHOICE_INSTRUCTION}"
    else:
        text = f"{question}\n\n{OPEN_INSTRUCTION}"
    if interleaved:
        for i in range(1, 8):
            text = text.replace(f"<image {i}>", "<image>")
    return text


def prompt_for(protocol: str, question: str, options: Sequence[str] | str, question_type: str) -> str:
    """:func:`official_prompt` for ``"mmmu"``, :func:`lmms_prompt` for ``"mmmu-lmms-eval"``."""
    return (
        official_prompt(question, options, question_type)
        if _protocol(protocol) == OFFICIAL
        else lmms_prompt(question, options, question_type)
    )


def _protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown MMMU protocol {protocol!r}; expected one of {PROTOCOLS}")
    return protocol


# ------------------------------------------------------------------------------------ multiple choice
# Characters stripped from both ends, one character class after the other and in this order
# (eval_utils.py:15-16): "B.'" keeps its "." because "'" is stripped after ".".
_STRIP_CHARS = (",", ".", "!", "?", ";", ":", "'")


def _check_choices(all_choices: Sequence[str], index2ans: Mapping[str, str]) -> list[str]:
    choices = list(all_choices)
    if not choices:
        raise ValueError("all_choices is empty: nothing to parse into (upstream random.choice would fail)")
    for key, ans in index2ans.items():
        if not isinstance(ans, str):
            raise ValueError(f"index2ans[{key!r}] must be a string, got {type(ans).__name__}")
    return choices


def _last(candidates: list[str], positions: list[int]) -> str:
    """``candidates[np.argmax(positions)]``: the largest position, the first candidate on ties."""
    best = 0
    for i in range(1, len(positions)):
        if positions[i] > positions[best]:
            best = i
    return candidates[best]


def _parse_mc(
    response: str,
    all_choices: Sequence[str],
    index2ans: Mapping[str, str],
    rng: random.Random,
    lmms: bool,
) -> tuple[str, bool]:
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    choices = _check_choices(all_choices, index2ans)
    for char in _STRIP_CHARS:
        response = response.strip(char)
    response = f" {response} "  # pad so " A " also matches at the ends (eval_utils.py:17)

    candidates: list[str] = []
    by_letter = True  # index_ans
    bracketed = False  # ans_with_brack
    # Pass 1: "(A)" (eval_utils.py:22-25; mmmu_mcq_utils.py:26-29).
    for choice in choices:
        if f"({choice})" in response:
            candidates.append(choice)
            bracketed = True
    # Pass 2: official " A " (eval_utils.py:27-30); lmms-eval "A " with no leading space
    # (mmmu_mcq_utils.py:31-34), which also matches the "A" ending "USA ".
    if not candidates:
        for choice in choices:
            if (f"{choice} " if lmms else f" {choice} ") in response:
                candidates.append(choice)
    # Pass 3, lmms-eval only: "A." (mmmu_mcq_utils.py:36-39).
    if lmms and not candidates:
        for choice in choices:
            if f"{choice}." in response:
                candidates.append(choice)
    # Last pass: option contents, case-insensitively, only for responses of more than 5
    # whitespace-separated tokens (eval_utils.py:33-37; mmmu_mcq_utils.py:41-45).
    if not candidates and len(response.split()) > 5:
        lowered = response.lower()
        for index, ans in index2ans.items():
            if ans.lower() in lowered:
                candidates.append(index)
                by_letter = False

    if not candidates:  # eval_utils.py:39-40: a random letter
        return rng.choice(choices), True
    if len(candidates) == 1:
        return candidates[0], False
    # Several: the one occurring last (eval_utils.py:41-58). Both protocols look for " A " here,
    # even where lmms-eval found "A " or "A." (mmmu_mcq_utils.py:55-57): all -1, so the first wins.
    if by_letter:
        pattern = "({})" if bracketed else " {} "
        positions = [response.rfind(pattern.format(c)) for c in candidates]
    else:
        lowered = response.lower()
        positions = [lowered.rfind(index2ans[c].lower()) for c in candidates]
    return _last(candidates, positions), False


def parse_multi_choice(
    response: str, all_choices: Sequence[str], index2ans: Mapping[str, str], rng: random.Random
) -> tuple[str, bool]:
    """The official parse_multi_choice_response (eval_utils.py:10-62): ``(letter, guessed)``.

    1. strip ``, . ! ? ; : '`` from both ends (one after the other), pad with a space each side;
    2. letters written ``(A)``; 3. else letters written `` A `` (spaces both sides);
    4. else, only if the response has more than 5 whitespace-separated tokens, options whose content
       occurs in it (case-insensitive);
    several candidates -> the one whose marker/content occurs last (``rfind``; first on ties);
    none -> ``rng.choice(all_choices)``, ``guessed=True``. Pass :func:`official_rng`, one per run,
    parsing in dataset order, to reproduce the official guesses.
    """
    return _parse_mc(response, all_choices, index2ans, rng, lmms=False)


def lmms_parse_multi_choice(
    response: str, all_choices: Sequence[str], index2ans: Mapping[str, str], rng: random.Random
) -> tuple[str, bool]:
    """lmms-eval 0.7.3's parse_mmmu_multi_choice_response (mmmu_mcq_utils.py:17-65):
    as :func:`parse_multi_choice` but pass 3 looks for ``"A "`` (no leading space: "the USA here"
    yields A), then an extra pass for ``"A."``, before the option contents. Its fallback draws from
    the global ``random`` seeded with 0 (:func:`lmms_eval_rng`, with the threading caveat)."""
    return _parse_mc(response, all_choices, index2ans, rng, lmms=True)


# ------------------------------------------------------------------------------------ open answers
def check_is_number(string: str) -> bool:
    """``float(string.replace(",", ""))`` succeeds (eval_utils.py:65-74). Like upstream this
    accepts "nan", "inf", "1e3" and "1_000"."""
    try:
        float(string.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_str(string: str) -> list[Union[float, str]]:
    """eval_utils.py:76-98: strip; a number -> ``[round(float, 2)]`` (commas removed); otherwise
    lower-cased, and a single character ``c`` becomes ``[" c", "c "]`` to avoid trivial matches."""
    string = string.strip()
    if check_is_number(string):
        return [round(float(string.replace(",", "")), 2)]
    string = string.lower()
    if len(string) == 1:
        return [" " + string, string + " "]
    return [string]


# eval_utils.py:105-109: comma-grouped, scientific, then plain numbers, concatenated in that order.
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def extract_numbers(string: str) -> list[str]:
    """All numbers in ``string`` (eval_utils.py:100-120), as strings: comma-grouped, then
    scientific, then plain. As upstream, the plain pattern also yields pieces of the others
    ("1,234 or 3e5" -> ["1,234", "3e5", "234", "5"])."""
    return _NUM_COMMAS.findall(string) + _NUM_SCIENTIFIC.findall(string) + _NUM_SIMPLE.findall(string)


_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = frozenset({":", ",", ".", "!", "?", ";", "'"})


def _key_subresponses(response: str) -> list[str]:
    """get_key_subresponses (eval_utils.py:128-155).

    NB the text is lower-cased *before* the split on ``\\.\\s(?=[A-Z])|\\n``, so the sentence
    branch never matches (no capitals are left): upstream splits on newlines only.
    """
    response = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys: list[str] = []
    for index, part in enumerate(parts):
        indicators = _KEY_INDICATORS + (("=",) if index == len(parts) - 1 else ())
        shortest: str | None = None
        for indicator in indicators:
            if indicator in part:
                tail = part.split(indicator)[-1].strip()
                # "if not shortest": an empty tail ("" is falsy) is replaced by the next one found.
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys if keys else [response]


def parse_open(response: str) -> list[Union[float, str]]:
    """The official parse_open_response (eval_utils.py:122-171): the tails after indicator words
    ("could be", "so", "is", "thus", "therefore", "final", "answer", "result", and "=" in the last
    line), the numbers in them, all through :func:`normalize_str`, duplicates removed.

    Upstream removes duplicates with ``set`` (arbitrary order); this keeps the first occurrence, which
    changes nothing for :func:`eval_open` (any match counts). lmms-eval 0.7.3 uses the same function.
    """
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    keys = _key_subresponses(response)
    raw: list[str] = list(keys)
    for key in keys:
        raw.extend(extract_numbers(key))
    out: list[Union[float, str]] = []
    for item in raw:
        for norm in normalize_str(item):
            if not any(type(norm) is type(seen) and (norm == seen or _both_nan(norm, seen)) for seen in out):
                out.append(norm)
    return out


def _both_nan(a: object, b: object) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def official_gold(answer: Union[str, Sequence[str]]) -> Union[str, list[str]]:
    """The gold as the official evaluator scores it: a list string such as ``"['$MgS$','MgS']"``
    becomes the list ``['$MgS$', 'MgS']`` (as stored in mmmu/answer_dict_val.json); a list stays a
    list; any other string is returned unchanged (also one that merely starts with "[")."""
    if isinstance(answer, str):
        text = answer.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return answer
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return value
        return answer
    golds = list(answer)
    if not golds or not all(isinstance(g, str) for g in golds):
        raise ValueError(f"a gold list must be a non-empty list of strings, got {answer!r}")
    return golds


def eval_multi_choice(gold: Union[str, Sequence[str]], pred: str) -> bool:
    """Exact letter equality; a list gold accepts any of its letters (eval_utils.py:175-189)."""
    if isinstance(gold, str):
        return gold == pred
    return any(g == pred for g in gold)


def _eval_open_normalized(golds: Union[str, Sequence[str]], preds: Iterable[Union[float, str]]) -> bool:
    """eval_open (eval_utils.py:191-216): a string prediction is right when a normalised string gold
    occurs in it; a number prediction when it equals a normalised (rounded) number gold."""
    if isinstance(golds, str):
        norm_answers = normalize_str(golds)
    else:
        norm_answers = [n for g in golds for n in normalize_str(g)]
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(n, str) and n in pred for n in norm_answers):
                return True
        elif pred in norm_answers:
            return True
    return False


def eval_open(gold: Union[str, Sequence[str]], preds: Iterable[Union[float, str]]) -> bool:
    """The official open-answer check for the output of :func:`parse_open`; list-string golds are
    first read as lists (:func:`official_gold`), as the official answer file stores them:
    ``eval_open("['$MgS$','MgS']", parse_open("MgS"))`` is True; "1.060" and "1.06" are equal."""
    if isinstance(preds, str):
        raise ValueError("preds must be the list parse_open returns, not a string")
    return _eval_open_normalized(official_gold(gold), preds)


def lmms_eval_open(gold: Union[str, Sequence[str]], preds: Iterable[Union[float, str]]) -> bool:
    """lmms-eval 0.7.3: the same comparison on ``doc["answer"]`` as stored, so a list-string gold
    is one string and never matches (utils.py:205 and eval_open 359-385 of the wheel)."""
    if isinstance(preds, str):
        raise ValueError("preds must be the list parse_open returns, not a string")
    return _eval_open_normalized(gold, preds)


# ------------------------------------------------------------------------------------ scoring
@dataclass(frozen=True)
class Scored:
    """One scored response: ``prediction`` is the letter (multiple choice) or the parsed candidate
    list (open); ``guessed`` is True when the letter came from the random fallback."""

    correct: bool
    prediction: Union[str, list[Union[float, str]]]
    guessed: bool


def score_response(
    protocol: str,
    *,
    question_type: str,
    response: str,
    answer: Union[str, Sequence[str]],
    options: Sequence[str] | str,
    rng: random.Random,
) -> Scored:
    """Parse and score one response under ``protocol`` (``"mmmu"`` or ``"mmmu-lmms-eval"``).

    Call it in dataset order with one generator per run (:func:`official_rng` /
    :func:`lmms_eval_rng`); only unparseable multiple-choice responses draw from ``rng``.
    """
    lmms = _protocol(protocol) == LMMS_EVAL
    if _question_kind(question_type) == MULTIPLE_CHOICE:
        index2ans, all_choices = choice_info(options)
        parse = lmms_parse_multi_choice if lmms else parse_multi_choice
        letter, guessed = parse(response, all_choices, index2ans, rng)
        return Scored(eval_multi_choice(answer, letter), letter, guessed)
    preds = parse_open(response)
    ok = lmms_eval_open(answer, preds) if lmms else eval_open(answer, preds)
    return Scored(ok, preds, False)


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def accuracy_per_subject(records: Iterable[Any]) -> dict[str, Any]:
    """Accuracy per subject, per discipline and overall, with the number of guessed answers.

    Each record is a mapping or object with ``correct`` (bool), ``guessed`` (bool, optional:
    False) and ``subject`` or an MMMU ``id`` (``validation_Accounting_1``). Returns::

        {"subjects": {subject: {"num", "correct", "acc", "guessed"}},   # SUBJECTS order
         "domains":  {discipline: {...}},   # DOMAINS with at least one record
         "overall":  {"num", "correct", "acc", "guessed"}}

    ``acc`` = correct / num (evaluate, eval_utils.py:241); overall and per-discipline ``acc`` are
    correct / total over all questions, which is what calculate_ins_level_acc (246-255) computes as
    sum(acc_s * n_s) / sum(n_s). Upstream prints them rounded to 3 decimals (main_eval_only.py:84,
    88, 94); nothing is rounded here. No records raises ``ValueError`` (upstream returns 0).
    """
    counts: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        subject = _field(record, "subject")
        if subject is None:
            qid = _field(record, "id")
            if qid is None:
                raise ValueError(f"record {i} has neither a subject nor an id")
            subject = subject_of(qid)
        elif subject not in SUBJECTS:
            raise ValueError(f"record {i}: unknown MMMU subject {subject!r}")
        correct = _field(record, "correct")
        guessed = _field(record, "guessed", False)
        if not isinstance(correct, bool) or not isinstance(guessed, bool):
            raise ValueError(f"record {i}: correct and guessed must be bools, got {correct!r}, {guessed!r}")
        row = counts.setdefault(subject, [0, 0, 0])
        row[0] += 1
        row[1] += int(correct)
        row[2] += int(guessed)
    if not counts:
        raise ValueError("no records: MMMU accuracy of nothing is undefined")

    def block(subjects: Iterable[str]) -> dict[str, Any]:
        num = sum(counts[s][0] for s in subjects if s in counts)
        right = sum(counts[s][1] for s in subjects if s in counts)
        guessed_n = sum(counts[s][2] for s in subjects if s in counts)
        return {"num": num, "correct": right, "acc": right / num, "guessed": guessed_n}

    return {
        "subjects": {s: block([s]) for s in SUBJECTS if s in counts},
        "domains": {d: block(subs) for d, subs in DOMAINS.items() if any(s in counts for s in subs)},
        "overall": block(SUBJECTS),
    }
