"""Typed records for benchmark questions and profiles.

Every question knows its set (forget/test/retain/celebrity), task
(classification/generation/cloze) and mode (image_text/text_only), so every number the
harness reports can be split along those three axes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

SETS = ("forget", "test", "retain", "celebrity")
TASKS = ("classification", "generation", "cloze")
MODES = ("image_text", "text_only")
LETTERS = ("A", "B", "C", "D")


def decode_image(data: bytes):
    """Raw encoded image bytes -> RGB PIL image (decoded lazily: images stay bytes in records)."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


class ImageDecoder:
    """Decode each distinct image once: all questions of a profile share its image, and the
    decoded RGB arrays are far larger than the encoded bytes. None stays None (text-only)."""

    def __init__(self):
        self._images: dict[bytes, object] = {}

    def __call__(self, data: bytes | None):
        if data is None:
            return None
        if data not in self._images:
            self._images[data] = decode_image(data)
        return self._images[data]


@dataclass(frozen=True)
class Question:
    """One benchmark question.

    qid is unique within a benchmark: "{set}/{profile_id}/{task}/{mode}/{index}".
    For classification `answer` is the correct letter and `options` maps letters (A-D in
    MLLMU-Bench) to text; for generation and cloze `answer` is the ground-truth text (cloze
    `text` contains "__"). `image` holds encoded image bytes in image_text mode and is None in
    text_only mode. `paraphrase` and `perturbed` are the TOFU-style alternatives of `answer`
    (truth ratio, normalised probability) where the benchmark has them (CLEAR); `options` of a
    CLEAR question are its perturbed alternatives for a multiple-choice protocol.
    """

    qid: str
    set: str
    task: str
    mode: str
    profile_id: str
    text: str
    answer: str
    options: dict[str, str] | None = None
    image: bytes | None = field(default=None, repr=False)
    paraphrase: str | None = None
    perturbed: tuple[str, ...] = ()
    meta: dict[str, str] | None = None  # a benchmark's own fields a task reads (MMMU subject, a judge's context)


@dataclass(frozen=True)
class FactPair:
    """A (image?, question, answer) training/statistics sample about one profile.

    Methods unlearn and MANU collects statistics on these. image_text pairs carry the profile
    image and say "this person"; text_only pairs carry no image and name the person.
    """

    profile_id: str
    mode: str
    question: str
    answer: str
    image: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Profile:
    """One person (fictitious or celebrity) with everything the benchmark holds about them."""

    id: str
    set: str
    biography: str
    image: bytes = field(repr=False)
    directory: str = ""
    vqa_question: str = ""  # the row's `question` field
    vqa_answer: str = ""  # the row's `answer` field
    questions: tuple[Question, ...] = ()
    ft_pairs: tuple[tuple[str, str], ...] = ()  # (Question, Answer) from ft_Data metadata
