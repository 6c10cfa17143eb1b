"""MMUnlearner's multiple-choice evaluation on CLEAR, reproduced as pure functions: the question,
the prompt text, the seed-42 option order and the answer parser.

Written from `Z1zs/MMUnlearner` @ fa77c66 `CLEAR_eval.py` (and `CLEAR_eval.sh`,
`data_process/CLEAR_process.py`), not copied from it. Line numbers refer to that commit.

How upstream builds an item (identity sets ``forget{r}_perturbed`` / ``retain{r}_perturbed``,
``eval_classification`` :44-99; ``real_faces`` / ``real_world``, ``eval_classification_real``
:213-248):

* question = the row's ``question`` if the column exists, else ``IDENTITY_QUESTION`` (:57, :219):
  real_world has the column, the identity sets and real_faces do not.
* options = the wrong answers (``perturbed_names`` :59, or ``options`` :221) with the gold answer
  inserted at ``random.randint(0, len(wrong))`` (:60, :222), drawn from the global ``random``
  seeded once with 42 at import (:19).
* prompt = ``f"{question}\\n{options_str}\\n"`` with ``options_str`` the lines ``"A. opt"`` joined
  by "\\n", letters ``chr(ord('A') + i)`` (``formulate_prompt_with_options`` :196-211); no
  instruction line, for both item kinds. It then goes through the chat template with the image.
* gold letter = letter of ``options.index(answer)``, the FIRST occurrence (:209).
* parsing (:77, :87 and :234, :236): delete every non-alphanumeric character, upper-case the
  first remaining one; nothing left -> no answer (never correct).

Random-draw order (what ``OptionOrder`` must replay):

* The official ``CLEAR_eval.sh`` starts FOUR separate processes, ``--eval_list`` "forget",
  "retain", "realface", "realworld"; each re-seeds at import, so each multiple-choice set gets
  its own fresh seed-42 stream: call ``option_lists`` once per set.
* Within one process ``main`` (:316-365) visits forget MC (:319), forget generation (:321),
  retain MC (:334), retain generation (:336), real faces (:348), real world (:359), each in
  dataset row order, whichever of them ``--eval_list`` names (substring test). The only other
  draw from ``random`` is the generation set's ``CLEAR_Dataset(..., mode=CAPTION_MODE)``
  (CLEAR_process.py:74): one ``random.choice`` of the 9 caption questions per row whose
  ``question`` is missing or empty (the image rows of ``forget{r}+tofu``), all at construction,
  before any generation. So a single process with several sets replays as: insert() per forget
  MC row, ``draw_caption_questions(n_forget_image_rows)``, insert() per retain MC row,
  ``draw_caption_questions(n_retain_image_rows)``, insert() per real-faces row, then per
  real-world row. (``CLEAR_process.py:14`` also seeds 42, but it is imported before :19 re-seeds.)
* The draw happens whether or not options are shown (:60 runs before ``if with_options``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IDENTITY_QUESTION = "What is the name of the person in the image?"  # CLEAR_eval.py:57, :219
SEED = 42  # CLEAR_eval.py:19

# The 9 caption questions of CLEAR_process.py:16-26, in order (the order matters to random.choice).
CAPTION_QUESTIONS: tuple[str, ...] = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)

# chr(ord('A') + i) (CLEAR_eval.py:208-209) is a letter only for i < 26; beyond 'Z' it yields
# '[', '\\', ... which the parser deletes, so such an option could never be answered.
MAX_OPTIONS = 26
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]")


def option_letter(index: int) -> str:
    """The letter of option ``index``: 'A', 'B', ... as ``chr(ord('A') + index)`` (CLEAR_eval.py:208)."""
    if not 0 <= index < MAX_OPTIONS:
        raise ValueError(
            f"option index {index} has no letter: upstream's chr(ord('A') + i) leaves A-Z after 26 options, "
            "and the parser could never match the character it gives"
        )
    return chr(ord("A") + index)


def choice_question(row: Mapping[str, Any]) -> str:
    """The question upstream asks for a dataset row: ``row.get("question", IDENTITY_QUESTION)``
    (CLEAR_eval.py:57, :219). A present but non-string value (upstream would print "None") raises."""
    if "question" not in row:
        return IDENTITY_QUESTION
    q = row["question"]
    if not isinstance(q, str):
        raise ValueError(f"row has a 'question' column whose value is {q!r}, not a string")
    return q


def format_prompt(question: str, options: Sequence[str]) -> str:
    """The user text upstream sends (before the chat template): the question, a newline, one line
    ``"A. option"`` per option, and a trailing newline (CLEAR_eval.py:208, :210)."""
    if not options:
        raise ValueError("a multiple-choice prompt needs at least one option")
    lines = "".join(f"{option_letter(i)}. {opt}\n" for i, opt in enumerate(options))
    return f"{question}\n{lines}"


def correct_letter(options: Sequence[str], answer: str) -> str:
    """Letter of the FIRST option equal to ``answer``, as ``options.index(answer)`` (CLEAR_eval.py:209):
    if a wrong option duplicates the answer, an earlier copy takes the letter."""
    try:
        return option_letter(list(options).index(answer))
    except ValueError as exc:
        if "has no letter" in str(exc):
            raise
        raise ValueError(f"answer {answer!r} is not among the options {list(options)!r}") from None


class OptionOrder:
    """Replays upstream's option shuffling with a private ``random.Random(seed)``.

    ``random.seed(42)`` followed by ``random.randint`` / ``random.choice`` on the module-level
    generator gives the same numbers as the same calls on ``random.Random(42)`` (the module
    functions are bound methods of one hidden ``Random``), so feeding samples in script order
    reproduces upstream's option lists without touching global state.
    """

    def __init__(self, seed: int = SEED) -> None:
        self._rng = random.Random(seed)

    def insert(self, answer: str, wrong_options: Sequence[str]) -> tuple[list[str], str]:
        """One sample: ``options.insert(randint(0, len(options)), answer)`` on a copy of
        ``wrong_options`` (CLEAR_eval.py:60, :222); returns (options, correct letter)."""
        if not isinstance(answer, str):
            raise ValueError(f"answer must be a string, got {answer!r}")
        options = list(wrong_options)
        if len(options) + 1 > MAX_OPTIONS:
            raise ValueError(f"{len(options) + 1} options exceed the {MAX_OPTIONS} letters A-Z")
        options.insert(self._rng.randint(0, len(options)), answer)
        return options, correct_letter(options, answer)

    def draw_caption_questions(self, n: int) -> list[str]:
        """Consume ``n`` ``random.choice(IMAGE_CAPTION_QUESTIONS)`` draws as a generation set's
        ``CLEAR_Dataset(mode=CAPTION_MODE)`` does (CLEAR_process.py:74); returns the questions
        drawn. Only needed to replay several sets in ONE process (see the module docstring)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self._rng.choice(CAPTION_QUESTIONS) for _ in range(n)]


def option_lists(samples: Iterable[tuple[str, Sequence[str]]], seed: int = SEED) -> list[tuple[list[str], str]]:
    """(options, correct letter) for each (answer, wrong_options) in script order, from a fresh
    ``OptionOrder(seed)``: one multiple-choice set as one ``CLEAR_eval.sh`` process sees it."""
    order = OptionOrder(seed)
    return [order.insert(answer, wrong) for answer, wrong in samples]


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice item as upstream poses it."""

    question: str
    options: tuple[str, ...]
    correct_letter: str
    prompt: str


def build_items(rows: Iterable[tuple[str, str, Sequence[str]]], seed: int = SEED) -> list[ChoiceItem]:
    """Items for (question, answer, wrong_options) rows in script order, one fresh seed-42 stream
    (one set, one process). Use ``choice_question`` for the question of a dataset row."""
    order = OptionOrder(seed)
    items = []
    for question, answer, wrong in rows:
        options, letter = order.insert(answer, wrong)
        items.append(ChoiceItem(question, tuple(options), letter, format_prompt(question, options)))
    return items


def parse_choice(text: str) -> str | None:
    """The letter upstream reads from a generation: delete non-alphanumerics
    (``re.sub(r'[^a-zA-Z0-9]', '', text)``, CLEAR_eval.py:77, :234), upper-case the first character
    (:87, :236). None when nothing is left. Only the first character counts, so "The answer is B"
    reads as "T"; a digit stays a digit and never matches."""
    stripped = _NON_ALNUM.sub("", text)
    return stripped[0].upper() if stripped else None


def is_correct(text: str, gold_letter: str) -> bool:
    """Whether upstream scores ``text`` as correct: ``parse_choice(text) == gold_letter`` (:88, :237)."""
    return parse_choice(text) == gold_letter
