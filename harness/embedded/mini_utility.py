"""Build the embedded mini utility suites: shape pictures in the hub layouts of MMMU,
LLaVA-Bench (in the wild), MME and POPE.

The unlearning papers measure "general ability" after unlearning on MMMU and LLaVA-Bench
(MANU), MME and POPE (FIUBench); see research/utility.md. Their real data needs a
multi-billion-parameter model. This module writes small stand-ins in exactly the real hub
layouts (file names, splits, column names, column types), so the harness's plugins for those
benchmarks read them with the same code as the real data, and the tiny model (32x32 images,
word-level vocabulary) can be trained on the same skills. Everything is generated and
fictitious: 32x32 RGB pictures of plain shapes, NOT portraits, drawn with PIL from a seeded
`random.Random`.

Pictures: a light background split into a 2x2 grid of 16x16 cells ("top left", "top right",
"bottom left", "bottom right"); each cell is empty or holds one shape (KINDS: circle, square,
triangle, diamond, cross, ring) of one named colour (COLOURS), 9-12 pixels wide with a small
random offset. A question is drawn first with its answer (so answers are balanced: letters,
yes/no, counts), then a picture it is true of (rejection sampling from the seeded stream); it
cannot be answered without the picture.

Layout under `out` (every parquet file written as minibench.py writes it: zstd, no statistics,
no timestamps, the `huggingface` schema metadata so `datasets` decodes images; same seed ->
byte-identical files):

- `mmmu/<Subject>/validation-00000-of-00001.parquet` (hub `MMMU/MMMU`, one config per subject,
  split `validation`) for SUBJECTS (invented subject names in MMMU's style: Shapes, Colors,
  Counting), 20 rows each: 10 four-option and 5 five-option multiple-choice rows (correct
  letters spread evenly) and 5 open rows (Counting: every other gold a list string
  "['3', 'three']"). Columns MMMU_COLUMNS; `options`, `img_type` and list golds are strings
  holding a Python list (`ast.literal_eval`); only `image_1` is set.
- `llava-bench/data/train-00000-of-00001.parquet` (hub `lmms-lab/llava-bench-in-the-wild`,
  split `train`): 8 pictures x (conv, detail, complex) = 24 rows; `gpt_answer` is a short
  reference answer, `caption` the picture's description (the judge's context), `question_id`
  int8 as on the hub.
- `mme/data/test-00000-of-00001.parquet` (hub `lmms-lab/MME`, split `test`): 20 pictures, 5 per
  perception category existence, count, position, color; two questions per picture (one
  "Yes", one "No", in a seeded order), both with the picture's `question_id`
  ("<category>/<n>.png") as MME's acc+ pairs them.
- `pope/data/test-00000-of-00001.parquet` (hub `lmms-lab/POPE`, config `default`, split `test`):
  20 pictures, each asked in the three categories adversarial, popular and random with the
  same 2 "yes" objects and 2 "no" objects per category (rows alternate yes/no, as POPE's).
  The objects are coloured shapes ("red circle"). POPE's negative sampling, approximated on
  these pictures: random = absent objects drawn at random; popular = the absent objects present
  in most pictures of the suite; adversarial = the absent objects that co-occur most often (in
  the suite's pictures) with the picture's objects. So that frequency and co-occurrence mean
  something, each POPE picture draws 2-4 distinct objects from one of POPE_THEMES (six groups
  of six coloured shapes, e.g. red or yellow circles, squares and triangles), themes drawn with
  unequal weights: the adversarial "no" objects are then mostly absent members of the
  picture's own theme, the popular ones members of the most frequent themes.
- `README.md` per suite folder with the hub's YAML `configs` header (so
  `datasets.load_dataset(<out>/mmmu, "Shapes", split="validation")` works as on the hub), and
  `out/README.md` describing all of it.

`training_items(root)` returns every row as a plain dict (suite, config, id, image bytes,
question, options, target answer) for the trainer that teaches the tiny model these skills.
"""

from __future__ import annotations

import ast
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

MINI_UTILITY = Path(__file__).resolve().parent / "assets" / "mini-utility"
IMAGE_SIZE = 32
CELL = IMAGE_SIZE // 2
CELLS = ("top left", "top right", "bottom left", "bottom right")
KINDS = ("circle", "square", "triangle", "diamond", "cross", "ring")
PLURALS = {k: k + "es" if k.endswith("s") else k + "s" for k in (*KINDS, "shape")}
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 195, 20),
    "purple": (140, 60, 190),
    "black": (25, 25, 25),
}
# Light backgrounds, none of them a mini-bench portrait background.
BACKGROUNDS = ((255, 255, 255), (250, 247, 235), (238, 244, 250))
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
LETTERS = "ABCDE"

SUBJECTS = ("Shapes", "Colors", "Counting")
MMMU_SPLIT = "validation"
N_MC4, N_MC5, N_OPEN = 10, 5, 5  # rows per subject
N_LLAVA_IMAGES = 8
LLAVA_CATEGORIES = ("conv", "detail", "complex")
MME_CATEGORIES = ("existence", "count", "position", "color")
MME_IMAGES_PER_CATEGORY = 5
MME_SUFFIX = " Please answer yes or no."
POPE_CATEGORIES = ("adversarial", "popular", "random")
N_POPE_IMAGES = 20
POPE_YES, POPE_NO = 2, 2  # questions per picture and category
# POPE pictures: (colours, kinds, weight) themes; a picture's objects come from one theme (see
# the module docstring). Every coloured shape is in exactly one theme.
POPE_THEMES = (
    (("red", "yellow"), ("circle", "square", "triangle"), 5),
    (("blue", "green"), ("circle", "square", "triangle"), 4),
    (("red", "yellow"), ("diamond", "cross", "ring"), 3),
    (("blue", "green"), ("diamond", "cross", "ring"), 2),
    (("purple", "black"), ("circle", "diamond", "cross"), 1),
    (("purple", "black"), ("square", "triangle", "ring"), 1),
)

SUITE_FILES = {
    "llava-bench": "data/train-00000-of-00001.parquet",
    "mme": "data/test-00000-of-00001.parquet",
    "pope": "data/test-00000-of-00001.parquet",
}

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MMMU_COLUMNS = (
    ("id", pa.string()),
    ("question", pa.string()),
    ("options", pa.string()),
    ("explanation", pa.string()),
    *((f"image_{i}", _IMAGE) for i in range(1, 8)),
    ("img_type", pa.string()),
    ("answer", pa.string()),
    ("topic_difficulty", pa.string()),
    ("question_type", pa.string()),
    ("subfield", pa.string()),
)
LLAVA_COLUMNS = (
    ("question_id", pa.int8()),
    ("question", pa.string()),
    ("image", _IMAGE),
    ("caption", pa.string()),
    ("gpt_answer", pa.string()),
    ("category", pa.string()),
    ("image_id", pa.string()),
)
MME_COLUMNS = (
    ("question_id", pa.string()),
    ("image", _IMAGE),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("category", pa.string()),
)
POPE_COLUMNS = (
    ("id", pa.string()),
    ("question_id", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("image_source", pa.string()),
    ("image", _IMAGE),
    ("category", pa.string()),
)
COLUMNS = {"mmmu": MMMU_COLUMNS, "llava-bench": LLAVA_COLUMNS, "mme": MME_COLUMNS, "pope": POPE_COLUMNS}

# Words of the questions, options and answers (what the model reads and writes) that the tiny
# model's tokenizer (assets/tiny-llava/tokenizer.json, word-level, 220 words) did not hold when
# this was written ("e" is the fifth option letter, "<" opens "<image 1>"); the tests check
# that every other word is in it.
NEW_WORDS = tuple(
    (
        "0 1 2 3 4 < above away be below black blue bottom circle circles color cross crosses describe detail "
        "diamond diamonds e empty explain four green how image left many more no purple red right ring rings "
        "shape shapes so square squares taken than there these three top triangle triangles two were would "
        "yellow yes"
    ).split()
)


# ----------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class Shape:
    cell: str
    kind: str
    colour: str
    size: int
    dx: int
    dy: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # in CELLS order
    background: tuple[int, int, int]

    def at(self, cell: str) -> Shape | None:
        return next((s for s in self.shapes if s.cell == cell), None)

    def count(self, kind: str | None = None, colour: str | None = None) -> int:
        return sum(1 for s in self.shapes if kind in (None, s.kind) and colour in (None, s.colour))

    def kinds(self) -> set[str]:
        return {s.kind for s in self.shapes}

    def objects(self) -> set[str]:
        return {s.name for s in self.shapes}

    def only(self, kind: str) -> Shape | None:
        """The one shape of this kind, None unless there is exactly one."""
        found = [s for s in self.shapes if s.kind == kind]
        return found[0] if len(found) == 1 else None

    def shape_at(self, cell: str) -> Shape:
        shape = self.at(cell)
        if shape is None:
            raise RuntimeError(f"nothing at the {cell}")  # a bug in this module
        return shape

    def the(self, kind: str) -> Shape:
        shape = self.only(kind)
        if shape is None:
            raise RuntimeError(f"not exactly one {kind}")  # a bug in this module
        return shape


def _scene(rng: random.Random, objects: list[tuple[str, str]]) -> Scene:
    """A scene of (kind, colour) objects in distinct random cells (at most 4)."""
    cells = rng.sample(CELLS, len(objects))
    shapes = []
    for cell, (kind, colour) in zip(cells, objects):
        size = rng.randint(9, 12)
        shapes.append(Shape(cell, kind, colour, size, rng.randint(0, 14 - size), rng.randint(0, 14 - size)))
    shapes.sort(key=lambda s: CELLS.index(s.cell))
    return Scene(tuple(shapes), rng.choice(BACKGROUNDS))


def _random_objects(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(rng.choice(KINDS), rng.choice(tuple(COLOURS))) for _ in range(n)]


def random_scene(rng: random.Random, n_shapes: int) -> Scene:
    """`n_shapes` random shapes in distinct quarters (tiny_skills' pictures for reading a picture)."""
    return _scene(rng, _random_objects(rng, n_shapes))


def describe(scene: Scene) -> str:
    """Every shape of the scene and where it is, as the LLaVA-Bench captions list them."""
    return _listing(scene.shapes)


def _until(rng: random.Random, make: Callable[[], Scene], ok: Callable[[Scene], bool]) -> Scene:
    """The first scene `make` draws that `ok` accepts (seeded stream: deterministic)."""
    for _ in range(10_000):
        scene = make()
        if ok(scene):
            return scene
    raise RuntimeError("mini-utility: no scene satisfies a question's constraints (a bug in this module)")


def draw(scene: Scene) -> Image.Image:
    """The 32x32 RGB picture of a scene."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), scene.background)
    d = ImageDraw.Draw(img)
    for s in scene.shapes:
        col, row = CELLS.index(s.cell) % 2, CELLS.index(s.cell) // 2
        x, y, n = col * CELL + 1 + s.dx, row * CELL + 1 + s.dy, s.size
        box = (x, y, x + n - 1, y + n - 1)
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            d.ellipse(box, fill=fill)
        elif s.kind == "ring":
            d.ellipse(box, outline=fill, width=2)
        elif s.kind == "square":
            d.rectangle(box, fill=fill)
        elif s.kind == "triangle":
            d.polygon([(x, y + n - 1), (x + n - 1, y + n - 1), (x + (n - 1) // 2, y)], fill=fill)
        elif s.kind == "diamond":
            h = (n - 1) // 2
            d.polygon([(x + h, y), (x + n - 1, y + h), (x + h, y + n - 1), (x, y + h)], fill=fill)
        else:  # cross
            t = 3 if n < 11 else 4
            a = (n - t) // 2
            d.rectangle((x, y + a, x + n - 1, y + a + t - 1), fill=fill)
            d.rectangle((x + a, y, x + a + t - 1, y + n - 1), fill=fill)
    return img


def _image(scene: Scene, path: str) -> dict:
    buf = io.BytesIO()
    draw(scene).save(buf, format="PNG", optimize=False)
    return {"bytes": buf.getvalue(), "path": path}


def _listing(shapes) -> str:
    """ "a red circle at the top left, a blue square at the top right and a green ring at the bottom left" """
    parts = [f"a {s.name} at the {s.cell}" for s in shapes]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _how_many(n: int, kind: str) -> str:
    return f"one {kind}" if n == 1 else f"{NUMBER_WORDS[n]} {PLURALS[kind]}"


def _balanced(rng: random.Random, values, n: int) -> list:
    """`n` values cycling through `values` (as even as n allows), in seeded order."""
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- MMMU


def _options_at(rng: random.Random, correct: str, pool, letter: str, n: int) -> list[str]:
    """`n` options: `correct` at `letter`, the others drawn from `pool` (correct excluded)."""
    others = rng.sample([v for v in pool if v != correct], n - 1)
    at = LETTERS.index(letter)
    return others[:at] + [correct] + others[at:]


def _mmmu_shapes(rng: random.Random, kind: str, letter: str | None) -> tuple[Scene, dict]:
    if kind == "mc5":  # which of five shapes is in the picture (exactly one of them is)
        assert letter is not None
        scene = _until(rng, lambda: _scene(rng, _random_objects(rng, rng.randint(1, 3))), lambda s: len(s.kinds()) <= 2)
        correct = rng.choice(sorted(scene.kinds()))
        options = _options_at(rng, correct, [k for k in KINDS if k not in scene.kinds()] + [correct], letter, 5)
        return scene, {
            "question": "<image 1> Which of these shapes is in the image?",
            "options": options,
            "answer_text": correct,
            "explanation": f"The image has {_listing(scene.shapes)}. Of the options only the {correct} is in it.",
            "subfield": "Shape Recognition",
        }
    cell = rng.choice(CELLS)
    scene = _until(rng, lambda: _scene(rng, _random_objects(rng, rng.randint(2, 4))), lambda s: s.at(cell) is not None)
    shape = scene.shape_at(cell)
    question = (
        f"<image 1> What is the shape at the {cell} of the image?"
        if kind == "mc4"
        else f"<image 1> Name the shape at the {cell} of the image."
    )
    return scene, {
        "question": question,
        "options": _options_at(rng, shape.kind, KINDS, letter, 4) if letter else [],
        "answer_text": shape.kind,
        "explanation": f"The shape at the {cell} is a {shape.name}.",
        "subfield": "Spatial Position",
    }


def _mmmu_colors(rng: random.Random, kind: str, letter: str | None) -> tuple[Scene, dict]:
    if kind == "mc5":
        cell = rng.choice(CELLS)
        scene = _until(
            rng, lambda: _scene(rng, _random_objects(rng, rng.randint(2, 4))), lambda s: s.at(cell) is not None
        )
        shape = scene.shape_at(cell)
        question = f"<image 1> What is the color of the shape at the {cell} of the image?"
        subfield = "Spatial Position"
    else:
        target = rng.choice(KINDS)
        scene = _until(
            rng,
            lambda: _scene(rng, [(target, rng.choice(tuple(COLOURS)))] + _random_objects(rng, rng.randint(0, 3))),
            lambda s: s.only(target) is not None,
        )
        shape = scene.the(target)
        question = (
            f"<image 1> What is the color of the {target}?"
            if kind == "mc4"
            else f"<image 1> Name the color of the {target}."
        )
        subfield = "Color Recognition"
    n = 5 if kind == "mc5" else 4
    return scene, {
        "question": question,
        "options": _options_at(rng, shape.colour, tuple(COLOURS), letter, n) if letter else [],
        "answer_text": shape.colour,
        "explanation": f"The {shape.kind} at the {shape.cell} is {shape.colour}.",
        "subfield": subfield,
    }


def _count_scene(rng: random.Random, n: int, kind: str | None = None, colour: str | None = None) -> Scene:
    """Exactly `n` shapes of `kind` (any colour) or of `colour` (any kind), plus 0-(4-n) others."""

    def make() -> Scene:
        objects = [(kind or rng.choice(KINDS), colour or rng.choice(tuple(COLOURS))) for _ in range(n)]
        extra = rng.randint(1 if n == 0 else 0, 4 - n)
        return _scene(rng, objects + _random_objects(rng, extra))

    return _until(rng, make, lambda s: s.count(kind, colour) == n)


def _mmmu_counting(rng: random.Random, kind: str, letter: str | None, open_count: int = 0) -> tuple[Scene, dict]:
    if kind == "mc5":  # options 0-4, the correct letter picks the count
        assert letter is not None
        n, colour = LETTERS.index(letter), rng.choice(tuple(COLOURS))
        scene = _count_scene(rng, n, colour=colour)
        return scene, {
            "question": f"<image 1> How many {colour} shapes are there in the image?",
            "options": ["0", "1", "2", "3", "4"],
            "answer_text": str(n),
            "explanation": f"There {'is' if n == 1 else 'are'} {n} {colour} shape{'' if n == 1 else 's'}.",
            "subfield": "Color Counting",
        }
    target = rng.choice(KINDS)
    n = LETTERS.index(letter) + 1 if letter else open_count
    scene = _count_scene(rng, n, kind=target)
    return scene, {
        "question": f"<image 1> How many {PLURALS[target]} are there in the image?",
        "options": ["1", "2", "3", "4"] if letter else [],
        "answer_text": str(n),
        "explanation": f"There {'is' if n == 1 else 'are'} {_how_many(n, target)}.",
        "subfield": "Object Counting",
    }


_MMMU_MAKERS = {"Shapes": _mmmu_shapes, "Colors": _mmmu_colors, "Counting": _mmmu_counting}


def _mmmu_rows(subject: str, seed: int) -> list[dict]:
    rng = random.Random(f"mini-utility:{seed}:mmmu:{subject}")
    plan = (
        [("mc4", L) for L in _balanced(rng, LETTERS[:4], N_MC4)]
        + [("mc5", L) for L in _balanced(rng, LETTERS, N_MC5)]
        + [("open", None)] * N_OPEN
    )
    rng.shuffle(plan)
    open_counts = iter(_balanced(rng, (1, 2, 3, 4), N_OPEN))
    rows: list[dict] = []
    n_open = 0
    for i, (kind, letter) in enumerate(plan, start=1):
        row_id = f"{MMMU_SPLIT}_{subject}_{i}"
        if subject == "Counting":
            scene, q = _mmmu_counting(rng, kind, letter, next(open_counts) if kind == "open" else 0)
        else:
            scene, q = _MMMU_MAKERS[subject](rng, kind, letter)
        if kind == "open":
            n_open += 1
            gold = q["answer_text"]
            # MMMU stores some open golds as a list string ("['24/7', '3.429']"): every other count.
            answer = repr([gold, NUMBER_WORDS[int(gold)]]) if subject == "Counting" and n_open % 2 == 0 else gold
        else:
            answer = letter
        rows.append(
            {
                "id": row_id,
                "question": q["question"],
                "options": repr(q["options"]),
                "explanation": q["explanation"],
                "image_1": _image(scene, f"{row_id}_1.png"),
                **{f"image_{k}": None for k in range(2, 8)},
                "img_type": repr(["Geometric Shapes"]),
                "answer": answer,
                "topic_difficulty": {"mc4": "Easy", "mc5": "Medium", "open": "Hard"}[kind],
                "question_type": "open" if kind == "open" else "multiple-choice",
                "subfield": q["subfield"],
            }
        )
    return rows


# ----------------------------------------------------------------------------- LLaVA-Bench


def _llava_rows(seed: int) -> list[dict]:
    rng = random.Random(f"mini-utility:{seed}:llava-bench")
    rows: list[dict] = []
    for i in range(N_LLAVA_IMAGES):
        image_id = f"{i + 1:03d}"
        conv_kind, complex_kind = i % 3, i % 2
        colour_kind = rng.choice(KINDS)  # conv 0: a kind that appears once
        count_kind = rng.choice(KINDS)  # conv 1: a kind that appears 1-3 times
        more = i % 4 < 2  # complex 1: "yes" on half the pictures

        def ok(s: Scene) -> bool:
            if conv_kind == 0 and s.only(colour_kind) is None:
                return False
            if conv_kind == 1 and not 1 <= s.count(count_kind) <= 3:
                return False
            if conv_kind == 2 and not any(Counter(x.name for x in s.shapes)[x.name] == 1 for x in s.shapes):
                return False
            if complex_kind == 0 and not any(0 < s.count(colour=c) < len(s.shapes) for c in COLOURS):
                return False
            if complex_kind == 1:
                counts = Counter(x.kind for x in s.shapes)
                if not any(counts[a] != counts[b] and (counts[a] > counts[b]) == more for a in counts for b in counts):
                    return False
            return True

        scene = _until(rng, lambda: _scene(rng, _random_objects(rng, rng.randint(2, 4))), ok)
        shapes = scene.shapes
        empty = [c for c in CELLS if scene.at(c) is None]
        description = f"The image has {_how_many(len(shapes), 'shape')}: {_listing(shapes)}."
        if empty:
            description += f" The {' and the '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty."
        caption = f"Shapes on a light background: {_listing(shapes)}."

        if conv_kind == 0:
            shape = scene.the(colour_kind)
            conv = (f"What color is the {colour_kind}?", f"The {colour_kind} is {shape.colour}.")
        elif conv_kind == 1:
            n = scene.count(count_kind)
            verb = "is" if n == 1 else "are"
            conv = (f"How many {PLURALS[count_kind]} are there?", f"There {verb} {_how_many(n, count_kind)}.")
        else:
            names = Counter(x.name for x in shapes)
            shape = rng.choice([x for x in shapes if names[x.name] == 1])
            conv = (f"Where is the {shape.name}?", f"The {shape.name} is at the {shape.cell}.")

        detail = (rng.choice(("Describe the image in detail.", "Describe this image in detail.")), description)

        if complex_kind == 0:
            colour = rng.choice([c for c in COLOURS if 0 < scene.count(colour=c) < len(shapes)])
            left = [x for x in shapes if x.colour != colour]
            complex_ = (
                f"If the {colour} shapes were taken away, how many shapes would be left?",
                f"There would be {_how_many(len(left), 'shape')} left: {_listing(left)}.",
            )
        else:
            counts = Counter(x.kind for x in shapes)
            a, b = rng.choice(
                [
                    (a, b)
                    for a in sorted(counts)
                    for b in sorted(counts)
                    if counts[a] != counts[b] and (counts[a] > counts[b]) == more
                ]
                + [(a, b) for a in sorted(counts) for b in KINDS if b not in counts and more]
            )
            na, nb = counts[a], counts[b]
            there = f"There {'is' if na == 1 else 'are'} {_how_many(na, a)} and {_how_many(nb, b)}"
            if nb == 0:
                there = f"There {'is' if na == 1 else 'are'} {_how_many(na, a)} and no {PLURALS[b]}"
            complex_ = (
                f"Are there more {PLURALS[a]} than {PLURALS[b]} in the image? Explain.",
                f"Yes. {there}, so there are more {PLURALS[a]}."
                if more
                else f"No. {there}, so there are more {PLURALS[b]}.",
            )

        image = _image(scene, f"{image_id}.png")
        for category, (question, answer) in zip(LLAVA_CATEGORIES, (conv, detail, complex_)):
            rows.append(
                {
                    "question_id": len(rows),
                    "question": question,
                    "image": image,
                    "caption": caption,
                    "gpt_answer": answer,
                    "category": category,
                    "image_id": image_id,
                }
            )
    return rows


# ----------------------------------------------------------------------------- MME


def _mme_pair(rng: random.Random, category: str, k: int) -> tuple[Scene, str, str]:
    """A scene with its true (Yes) and false (No) question of this MME category."""
    random_scene = lambda lo, hi: _scene(rng, _random_objects(rng, rng.randint(lo, hi)))  # noqa: E731
    if category == "existence":
        scene = _until(rng, lambda: random_scene(1, 3), lambda s: len(s.kinds()) < len(KINDS))
        present = rng.choice(sorted(scene.kinds()))
        absent = rng.choice([x for x in KINDS if x not in scene.kinds()])
        return scene, f"Is there a {present} in this image?", f"Is there a {absent} in this image?"
    if category == "count":
        n, target = k % 4 + 1, rng.choice(KINDS)
        scene = _count_scene(rng, n, kind=target)
        wrong_n = rng.choice([m for m in (1, 2, 3, 4) if m != n])

        def ask(m: int) -> str:
            return (
                f"Is there one {target} in this image?"
                if m == 1
                else (f"Are there {NUMBER_WORDS[m]} {PLURALS[target]} in this image?")
            )

        return scene, ask(n), ask(wrong_n)
    if category == "position":
        horizontal = k % 2 == 0

        def ok(s: Scene) -> bool:
            unique = [x for x in s.shapes if s.count(x.kind) == 1]
            return any(_relation(a, b, horizontal) for a in unique for b in unique if a.kind != b.kind)

        scene = _until(rng, lambda: random_scene(2, 4), ok)
        unique = [x for x in scene.shapes if scene.count(x.kind) == 1]
        a, b = rng.choice([(a, b) for a in unique for b in unique if a.kind != b.kind and _relation(a, b, horizontal)])
        true = _relation(a, b, horizontal)
        assert true is not None
        false = _OPPOSITE[true]
        return scene, f"Is the {a.kind} {true} the {b.kind}?", f"Is the {a.kind} {false} the {b.kind}?"
    # color
    target = rng.choice(KINDS)
    scene = _until(
        rng,
        lambda: _scene(rng, [(target, rng.choice(tuple(COLOURS)))] + _random_objects(rng, rng.randint(0, 3))),
        lambda s: s.only(target) is not None,
    )
    colour = scene.the(target).colour
    wrong = rng.choice([c for c in COLOURS if c != colour])
    return scene, f"Is the {target} in this image {colour}?", f"Is the {target} in this image {wrong}?"


_OPPOSITE = {
    "on the left of": "on the right of",
    "on the right of": "on the left of",
    "above": "below",
    "below": "above",
}


def _relation(a: Shape, b: Shape, horizontal: bool) -> str | None:
    """Where a is with respect to b when they share a row (horizontal) or a column."""
    ia, ib = CELLS.index(a.cell), CELLS.index(b.cell)
    if horizontal and ia // 2 == ib // 2:
        return "on the left of" if ia % 2 < ib % 2 else "on the right of"
    if not horizontal and ia % 2 == ib % 2:
        return "above" if ia // 2 < ib // 2 else "below"
    return None


def _mme_rows(seed: int) -> list[dict]:
    rng = random.Random(f"mini-utility:{seed}:mme")
    yes_first = iter(_balanced(rng, (True, False), len(MME_CATEGORIES) * MME_IMAGES_PER_CATEGORY))
    rows: list[dict] = []
    for category in MME_CATEGORIES:
        for k in range(MME_IMAGES_PER_CATEGORY):
            scene, yes, no = _mme_pair(rng, category, k)
            question_id = f"{category}/{k + 1:04d}.png"
            image = _image(scene, question_id.replace("/", "_"))
            pair = [(yes, "Yes"), (no, "No")]
            for question, answer in pair if next(yes_first) else pair[::-1]:
                rows.append(
                    {
                        "question_id": question_id,
                        "image": image,
                        "question": question + MME_SUFFIX,
                        "answer": answer,
                        "category": category,
                    }
                )
    return rows


# ----------------------------------------------------------------------------- POPE


def _pope_scene(rng: random.Random) -> Scene:
    colours, kinds, _ = rng.choices(POPE_THEMES, [w for *_, w in POPE_THEMES])[0]
    members = [(k, c) for c in colours for k in kinds]
    return _scene(rng, rng.sample(members, rng.randint(2, 4)))


def pope_plan(seed: int = 0) -> tuple[list[Scene], list[dict[str, list[str]]]]:
    """The POPE pictures and, per picture, the objects asked: "yes" (present, the same in every
    category) and one list of absent objects per category (see the module docstring)."""
    rng = random.Random(f"mini-utility:{seed}:pope")
    scenes = [
        _until(rng, lambda: _pope_scene(rng), lambda s: len(s.objects()) >= POPE_YES) for _ in range(N_POPE_IMAGES)
    ]
    everything = sorted(f"{c} {k}" for c in COLOURS for k in KINDS)
    frequency = Counter(o for s in scenes for o in s.objects())
    together = Counter((a, b) for s in scenes for a in s.objects() for b in s.objects() if a != b)
    per_image = []
    for s in scenes:
        present = s.objects()
        absent = [o for o in everything if o not in present]
        by_frequency = sorted(absent, key=lambda o: (-frequency[o], o))
        by_cooccurrence = sorted(absent, key=lambda o: (-sum(together[(p, o)] for p in present), -frequency[o], o))
        per_image.append(
            {
                "yes": rng.sample(sorted(present), POPE_YES),
                "random": rng.sample(absent, POPE_NO),
                "popular": by_frequency[:POPE_NO],
                "adversarial": by_cooccurrence[:POPE_NO],
            }
        )
    return scenes, per_image


def _pope_rows(seed: int) -> list[dict]:
    scenes, per_image = pope_plan(seed)
    images = [_image(s, f"SHAPES_val_{i + 1:012d}.png") for i, s in enumerate(scenes)]
    rows: list[dict] = []
    for category in POPE_CATEGORIES:
        question_id = 0
        for i, asked in enumerate(per_image):
            yes, no = asked["yes"], asked[category]
            for k in range(POPE_YES + POPE_NO):  # alternate yes/no, as POPE's files do
                obj, answer = (yes[k // 2], "yes") if k % 2 == 0 else (no[k // 2], "no")
                question_id += 1
                rows.append(
                    {
                        "id": str(len(rows)),
                        "question_id": str(question_id),
                        "question": f"Is there a {obj} in the image?",
                        "answer": answer,
                        "image_source": f"SHAPES_val_{i + 1:012d}",
                        "image": images[i],
                        "category": category,
                    }
                )
    return rows


# ----------------------------------------------------------------------------- writing


def schema(suite: str) -> pa.Schema:
    """The arrow schema of a suite's parquet files, with the hub's `huggingface` metadata."""
    features = {
        name: {"_type": "Image"} if t == _IMAGE else {"dtype": str(t), "_type": "Value"} for name, t in COLUMNS[suite]
    }
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(list(COLUMNS[suite]), metadata=metadata)


def _write(rows: list[dict], suite: str, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema(suite))
    pq.write_table(table, path, compression="zstd", write_statistics=False, store_schema=True)
    return len(rows)


def _hub_readme(hub: str, configs: list[tuple[str, str, str]], body: str) -> str:
    """A hub-style README: YAML `configs` (name, split, path glob) and a short body."""
    yaml = ["---", "configs:"]
    for name, split, glob in configs:
        yaml.append(f"- config_name: {name}\n  data_files:\n  - split: {split}\n    path: {glob}")
    yaml.append("---")
    return "\n".join(yaml) + f"\n\n# Mini stand-in for `{hub}` (generated, fictitious)\n\n{body}\n"


def words(text: str) -> list[str]:
    """`text` split as the tiny model's tokenizer splits it (lower case; whitespace; each
    punctuation character on its own)."""
    return re.findall(r"[^\W_]+|[^\w\s]|_", text.lower())


def _top_readme(counts: dict[str, int], vocabulary: list[str], seed: int) -> str:
    table = "\n".join(f"| `{k}` | {v} |" for k, v in counts.items())
    return f"""# mini utility suites (generated, fictitious)

Small stand-ins for four general-ability benchmarks, each in the real benchmark's hub layout
(file names, splits, column names and types), so the harness reads them with the same code as
the real data and the embedded tiny model can be trained and evaluated on them. Nothing here
comes from those benchmarks' data: every picture, question and answer is generated
(`mmunlearn build-minibench --utility`, seed {seed}, code `harness/embedded/mini_utility.py`,
whose docstring details the generation).

Pictures: 32x32 RGB, NOT portraits: a light background in a 2x2 grid of cells (top left, top
right, bottom left, bottom right), each empty or holding one shape of one colour.
Shapes: {", ".join(KINDS)}.
Colours: {", ".join(COLOURS)}.
Answers are drawn first and balanced (correct letters, yes/no, counts), then a picture they
are true of: a question cannot be answered without its picture.

- `mmmu/` (hub `MMMU/MMMU`): one config per invented subject ({", ".join(SUBJECTS)}),
  `<Subject>/validation-00000-of-00001.parquet`; {N_MC4} four-option and {N_MC5} five-option
  multiple-choice rows and {N_OPEN} open rows per subject; `options` is a string holding a Python
  list, only `image_1` is set, some open golds are list strings ("['3', 'three']").
- `llava-bench/` (hub `lmms-lab/llava-bench-in-the-wild`): {N_LLAVA_IMAGES} pictures with one
  conv, one detail and one complex question each; `gpt_answer` is a short reference answer,
  `caption` the picture's description.
- `mme/` (hub `lmms-lab/MME`): {len(MME_CATEGORIES) * MME_IMAGES_PER_CATEGORY} pictures,
  {MME_IMAGES_PER_CATEGORY} per category ({", ".join(MME_CATEGORIES)}), each with one "Yes"
  and one "No" question sharing its `question_id`.
- `pope/` (hub `lmms-lab/POPE`, default config): {N_POPE_IMAGES} pictures, each asked in every
  category ({", ".join(POPE_CATEGORIES)}) about the same {POPE_YES} present objects ("yes")
  and {POPE_NO} absent ones ("no"); objects are coloured shapes ("Is there a red circle in the
  image?"). POPE's three negative samplings, approximated on these pictures: random = absent
  objects drawn at random; popular = the absent objects present in most of the suite's
  pictures; adversarial = the absent objects that co-occur most often with the picture's
  objects. Each POPE picture holds 2-4 objects of one of six themes (groups of six coloured
  shapes, e.g. red or yellow circles, squares and triangles) drawn with unequal weights, so
  adversarial "no" objects are mostly the theme's absent members and popular ones members of
  the most frequent themes.

Not written: MMMU's dev and test splits, POPE's `Full` config (the same rows split by
category), LLaVA-Bench's original jsonl release.

| suite/config | rows |
|---|---|
{table}

Vocabulary of the questions, options and answers ({len(vocabulary)} words, as the tiny
model's word-level tokenizer splits text):

{" ".join(vocabulary)}

Of these, new to the tiny model's tokenizer when this was built ({len(NEW_WORDS)}):

{" ".join(NEW_WORDS)}
"""


def build_mini_utility(out: str | Path, seed: int = 0) -> dict[str, int]:
    """Write the four suites under `out`; returns {suite or suite/config: rows written}.

    Same seed -> byte-identical files."""
    out = Path(out)
    counts: dict[str, int] = {}
    for subject in SUBJECTS:
        path = out / "mmmu" / subject / f"{MMMU_SPLIT}-00000-of-00001.parquet"
        counts[f"mmmu/{subject}"] = _write(_mmmu_rows(subject, seed), "mmmu", path)
    counts["llava-bench"] = _write(_llava_rows(seed), "llava-bench", out / "llava-bench" / SUITE_FILES["llava-bench"])
    counts["mme"] = _write(_mme_rows(seed), "mme", out / "mme" / SUITE_FILES["mme"])
    counts["pope"] = _write(_pope_rows(seed), "pope", out / "pope" / SUITE_FILES["pope"])

    readmes = {
        "mmmu": _hub_readme(
            "MMMU/MMMU",
            [(s, MMMU_SPLIT, f"{s}/{MMMU_SPLIT}-*") for s in SUBJECTS],
            "Invented subjects about shape pictures, MMMU's columns; see ../README.md.",
        ),
        "llava-bench": _hub_readme(
            "lmms-lab/llava-bench-in-the-wild",
            [("default", "train", "data/train-*")],
            "Shape pictures with conv, detail and complex questions; see ../README.md.",
        ),
        "mme": _hub_readme(
            "lmms-lab/MME",
            [("default", "test", "data/test-*")],
            "Yes/no pairs about shape pictures (existence, count, position, color); see ../README.md.",
        ),
        "pope": _hub_readme(
            "lmms-lab/POPE",
            [("default", "test", "data/test-*")],
            "Object probing (is there a <colour> <shape>?) on shape pictures; see ../README.md.",
        ),
    }
    for suite, text in readmes.items():
        (out / suite / "README.md").write_bytes(text.encode("utf-8"))
    (out / "README.md").write_bytes(_top_readme(counts, vocabulary(out), seed).encode("utf-8"))
    return counts


# ----------------------------------------------------------------------------- reading back


def _read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def training_items(root: str | Path = MINI_UTILITY) -> list[dict]:
    """Every row of the suites under `root` as {suite, config, id, image (PNG bytes), question,
    options (MMMU: the option texts, else None), answer (the target: MMMU the letter or the open
    gold, LLaVA-Bench the reference answer, MME "Yes"/"No", POPE "yes"/"no"), answer_text (MMMU
    multiple choice: the correct option's text; else = answer)}.

    MMMU questions are the raw `question` column (with "<image 1>"); how options are shown is
    the evaluating plugin's prompt. Open list-string golds give their first element."""
    root = Path(root)
    items = []
    for subject in SUBJECTS:
        for r in _read(root / "mmmu" / subject / f"{MMMU_SPLIT}-00000-of-00001.parquet"):
            options = ast.literal_eval(r["options"])
            if r["question_type"] == "multiple-choice":
                answer, text = r["answer"], options[LETTERS.index(r["answer"])]
            else:
                gold = ast.literal_eval(r["answer"]) if r["answer"].startswith("[") else r["answer"]
                answer = text = gold[0] if isinstance(gold, list) else gold
            items.append(
                {
                    "suite": "mmmu",
                    "config": subject,
                    "id": r["id"],
                    "image": r["image_1"]["bytes"],
                    "question": r["question"],
                    "options": options or None,
                    "answer": answer,
                    "answer_text": text,
                }
            )
    for r in _read(root / "llava-bench" / SUITE_FILES["llava-bench"]):
        items.append(
            {
                "suite": "llava-bench",
                "config": r["category"],
                "id": str(r["question_id"]),
                "image": r["image"]["bytes"],
                "question": r["question"],
                "options": None,
                "answer": r["gpt_answer"],
                "answer_text": r["gpt_answer"],
            }
        )
    for r in _read(root / "mme" / SUITE_FILES["mme"]):
        items.append(
            {
                "suite": "mme",
                "config": r["category"],
                "id": r["question_id"],
                "image": r["image"]["bytes"],
                "question": r["question"],
                "options": None,
                "answer": r["answer"],
                "answer_text": r["answer"],
            }
        )
    for r in _read(root / "pope" / SUITE_FILES["pope"]):
        items.append(
            {
                "suite": "pope",
                "config": r["category"],
                "id": r["id"],
                "image": r["image"]["bytes"],
                "question": r["question"],
                "options": None,
                "answer": r["answer"],
                "answer_text": r["answer"],
            }
        )
    return items


def vocabulary(root: str | Path = MINI_UTILITY) -> list[str]:
    """Sorted distinct words of every item's question, options, answer and answer_text."""
    found: set[str] = set()
    for item in training_items(root):
        for text in [item["question"], item["answer"], item["answer_text"], *(item["options"] or [])]:
            found.update(words(text))
    return sorted(found)
