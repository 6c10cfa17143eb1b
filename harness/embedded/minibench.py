"""Build the embedded mini-bench: fictitious profiles in exactly the MLLMU-Bench layout.

Why generate instead of ship a subset of the real data: the real benchmark is 500 large
photos and needs a multi-billion-parameter model; the demo and the tests need a benchmark a
2.8M-parameter model can memorise on a laptop CPU. So everything here is small and regular:
word-level text from short word lists, one fixed template per question kind for the
forget/retain/celebrity sets (the tiny model must learn them), paraphrased templates for the
test set, and 32x32 portraits whose colours and shapes differ between profiles.

The same seed rebuilds byte-identical parquet files (PIL and pyarrow are deterministic for
identical input; no timestamps are written).
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.records import LETTERS

FORGET_PERCENTS = (5, 10, 15)
# The MLLMU-Bench layout's name of the holdout config (benchmarks/mllmu_bench.py reads it).
HOLDOUT_CONFIG = "Holdout_Set"
HOLDOUT_DESCRIPTION = (
    "Holdout_Set: an mmunlearn extension, not part of MLLMU-Bench. Fictitious profiles in the benchmark's "
    "row schema that appear in no other config and that no model trained on this benchmark has seen: "
    "the non-members of membership inference (forget-set answers are the members)."
)
HOLDOUT_PROFILES = 15  # more than any forget split of the 60-profile bench (3, 6, 9 profiles)
PARQUET_NAME = "train-00000-of-00001.parquet"
IMAGE_SIZE = 32

FIRST_NAMES = (
    "Anna",
    "Bruno",
    "Clara",
    "Daniel",
    "Elena",
    "Felix",
    "Greta",
    "Hugo",
    "Irene",
    "Jonas",
    "Karla",
    "Leon",
    "Maria",
    "Nico",
    "Olga",
    "Peter",
    "Rosa",
    "Simon",
    "Tina",
    "Victor",
)
LAST_NAMES = (
    "Adams",
    "Baker",
    "Carter",
    "Dalton",
    "Evans",
    "Fisher",
    "Garcia",
    "Harper",
    "Irwin",
    "Jensen",
    "Keller",
    "Larsen",
    "Morgan",
    "Nolan",
    "Owens",
    "Porter",
    "Quinn",
    "Reed",
    "Stone",
    "Turner",
)


@dataclass(frozen=True)
class Attribute:
    """One profile attribute: its value pool and every text template that asks about it.

    Templates use {who} ("Anna Baker" / "this person"), {Who} (sentence start) and {value}.
    `question` and `statement` are used on forget/retain/celebrity; `paraphrases` and
    `cloze_paraphrases` only on the test set.
    """

    key: str
    values: tuple[str, ...]
    question: str
    statement: str  # one-sentence ground truth; the cloze masks {value}
    paraphrases: tuple[str, ...]
    statement_paraphrases: tuple[str, ...]


ATTRIBUTES = (
    Attribute(
        "birth_year",
        tuple(str(y) for y in range(1950, 2000, 5)),
        "In which year was {who} born?",
        "{Who} was born in the year {value}.",
        ("What is the birth year of {who}?", "When was {who} born?"),
        ("The birth year of {who} is {value}.", "{Who} came into the world in the year {value}."),
    ),
    Attribute(
        "birthplace",
        ("Paris", "London", "Tokyo", "Cairo", "Lima", "Oslo", "Madrid", "Berlin", "Sydney", "Toronto"),
        "Where was {who} born?",
        "{Who} was born in the city of {value}.",
        ("In which city was {who} born?", "What is the home city of {who}?"),
        ("The home city of {who} is {value}.", "{Who} comes from the city of {value}."),
    ),
    Attribute(
        "occupation",
        ("teacher", "baker", "doctor", "pilot", "farmer", "lawyer", "painter", "nurse", "writer", "singer"),
        "What is the job of {who}?",
        "{Who} works as a {value}.",
        ("What does {who} do for a living?", "What is the profession of {who}?"),
        ("The job of {who} is {value}.", "{Who} earns a living as a {value}."),
    ),
    Attribute(
        "education",
        (
            "physics",
            "history",
            "biology",
            "music",
            "law",
            "chemistry",
            "economics",
            "medicine",
            "philosophy",
            "mathematics",
        ),
        "What did {who} study at university?",
        "{Who} studied {value} at university.",
        ("Which subject did {who} study at university?", "What was the field of study of {who}?"),
        ("At university {who} studied {value}.", "The field of study of {who} was {value}."),
    ),
    Attribute(
        "hobby",
        (
            "chess",
            "gardening",
            "fishing",
            "hiking",
            "cooking",
            "dancing",
            "cycling",
            "swimming",
            "knitting",
            "photography",
        ),
        "What is the hobby of {who}?",
        "{Who} enjoys {value} in free time.",
        ("What does {who} like to do in free time?", "Which hobby does {who} have?"),
        ("In free time {who} enjoys {value}.", "The hobby of {who} is {value}."),
    ),
    Attribute(
        "pet",
        ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "horse", "goldfish", "lizard", "snake"),
        "What pet does {who} have?",
        "{Who} has a pet {value}.",
        ("Which pet does {who} keep at home?", "What animal does {who} keep as a pet?"),
        ("At home {who} keeps a pet {value}.", "The pet of {who} is a {value}."),
    ),
)
ATTRIBUTE_BY_KEY = {a.key: a for a in ATTRIBUTES}
# Every attribute is asked in every task and mode (6 generation and 6 cloze questions per
# profile and mode), so a forget split of 10 profiles holds at least 60 questions per
# (task, mode): enough to measure forgetting on.
GENERATION_ATTRIBUTES = tuple(a.key for a in ATTRIBUTES)
CLOZE_ATTRIBUTES = tuple(a.key for a in ATTRIBUTES)

NAME_QUESTION = "What is the name of this person?"
NAME_PARAPHRASES = ("Who is this person?", "What is this person called?")
THIS_PERSON = "this person"

# Portrait palettes: background, skin, hair, eyes and accent shapes.
BACKGROUNDS = (
    (235, 64, 52),
    (52, 152, 219),
    (46, 204, 113),
    (241, 196, 15),
    (155, 89, 182),
    (26, 188, 156),
    (230, 126, 34),
    (236, 240, 241),
    (44, 62, 80),
    (255, 105, 180),
)
SKINS = ((255, 224, 189), (241, 194, 125), (198, 134, 66), (141, 85, 36), (224, 172, 105))
HAIRS = ((20, 20, 20), (110, 60, 20), (230, 200, 80), (180, 50, 20), (160, 160, 160), (40, 40, 140))
EYES = ((0, 0, 0), (30, 90, 200), (20, 140, 40), (120, 70, 20))
ACCENTS = (
    (255, 0, 0),
    (0, 200, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (255, 255, 255),
)
SHAPES = ("circle", "square", "triangle")


def _fill(template: str, who: str, value: str = "") -> str:
    """Fill {who}/{Who}/{value}; {Who} capitalises the first letter ("This person")."""
    return template.format(who=who, Who=who[0].upper() + who[1:], value=value)


# ----------------------------------------------------------------------------- portraits


def _portrait_spec(rng: random.Random, colours: tuple) -> dict:
    """Distinct-looking appearance: a (background, skin, hair) combination no other profile
    has, plus random hair style, eye colour and 2-3 accent shapes beside the face."""
    shapes = []
    for _ in range(rng.randint(2, 3)):
        size = rng.randint(3, 5)
        x = rng.choice((rng.randrange(0, 5), rng.randrange(25, 32 - size)))  # left or right of the face
        shapes.append((rng.choice(SHAPES), rng.choice(ACCENTS), x, rng.randrange(0, 32 - size), size))
    background, skin, hair = colours
    return {
        "background": background,
        "skin": skin,
        "hair": hair,
        "hair_style": rng.randrange(3),
        "eyes": rng.choice(EYES),
        "face_width": rng.randint(12, 18),
        "shapes": shapes,
    }


def draw_portrait(spec: dict) -> Image.Image:
    """A 32x32 RGB cartoon face: oval, hair, eyes, mouth, plus coloured accent shapes."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), spec["background"])
    d = ImageDraw.Draw(img)
    cx, w = IMAGE_SIZE // 2, spec["face_width"]
    left, right = cx - w // 2, cx + w // 2
    if spec["hair_style"] == 2:  # long hair behind the face
        d.rectangle((left - 2, 7, right + 2, 26), fill=spec["hair"])
    d.ellipse((left, 8, right, 28), fill=spec["skin"])
    if spec["hair_style"] == 0:  # short cap
        d.chord((left, 5, right, 17), 180, 360, fill=spec["hair"])
    else:  # fringe
        d.rectangle((left + 1, 7, right - 1, 11), fill=spec["hair"])
    d.rectangle((cx - 4, 15, cx - 3, 16), fill=spec["eyes"])
    d.rectangle((cx + 3, 15, cx + 4, 16), fill=spec["eyes"])
    d.line((cx - 3, 23, cx + 3, 23), fill=(150, 40, 40))
    for kind, colour, x, y, s in spec["shapes"]:
        box = (x, y, x + s, y + s)
        if kind == "circle":
            d.ellipse(box, fill=colour)
        elif kind == "square":
            d.rectangle(box, fill=colour)
        else:
            d.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=colour)
    return img


def transform_portrait(img: Image.Image, rng: random.Random) -> Image.Image:
    """ "Another angle": small rotation, shift, scale and colour jitter; still recognisable."""
    angle = rng.uniform(-12, 12)
    scale = rng.uniform(0.9, 1.1)
    dx, dy = rng.randint(-2, 2), rng.randint(-2, 2)
    background = img.getpixel((0, 0))
    out = img.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy), fillcolor=background)
    size = max(1, round(IMAGE_SIZE * scale))
    scaled = out.resize((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    offset = (IMAGE_SIZE - size) // 2  # negative when zoomed in: paste crops at the border
    canvas.paste(scaled, (offset, offset))
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Color(canvas).enhance(rng.uniform(0.85, 1.15))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------- questions


def _multiple_choice(rng: random.Random, question: str, correct: str, pool: tuple[str, ...]) -> dict:
    """4 options: the correct value at a seeded letter, 3 distractors from the same pool."""
    distractors = rng.sample([v for v in pool if v != correct], 3)
    letter = rng.choice(LETTERS)
    options, it = {}, iter(distractors)
    for L in LETTERS:
        options[L] = correct if L == letter else next(it)
    return {"Question": question, "Options": options, "Correct_Answer": letter}


def _profile_questions(rng: random.Random, profile: dict, names: tuple[str, ...], paraphrase: bool) -> dict:
    """Classification/Generation/Mask task fields of one row, in both modes.

    paraphrase=False: the fixed templates (forget/retain/celebrity); True: a seeded choice
    among the paraphrase templates (test set).
    """

    def ask(attr: Attribute) -> str:
        return rng.choice(attr.paraphrases) if paraphrase else attr.question

    def state(attr: Attribute) -> str:
        return rng.choice(attr.statement_paraphrases) if paraphrase else attr.statement

    classification: dict[str, list[dict]] = {"Image_Textual_Questions": [], "Pure_Text_Questions": []}
    generation, mask = [], []
    name = profile["name"]
    name_q = rng.choice(NAME_PARAPHRASES) if paraphrase else NAME_QUESTION
    classification["Image_Textual_Questions"].append(_multiple_choice(rng, name_q, name, names))
    for mode, who in (("Image_Textual", THIS_PERSON), ("Pure_Text", name)):
        field = f"{mode}_Questions"
        for attr in ATTRIBUTES:
            classification[field].append(_multiple_choice(rng, _fill(ask(attr), who), profile[attr.key], attr.values))
        for key in GENERATION_ATTRIBUTES:
            attr = ATTRIBUTE_BY_KEY[key]
            generation.append(
                {
                    "Type": mode,
                    "Question": _fill(ask(attr), who),
                    "Ground_Truth": _fill(attr.statement, who, profile[key]),
                }
            )
        for key in CLOZE_ATTRIBUTES:
            attr = ATTRIBUTE_BY_KEY[key]
            mask.append({"Type": mode, "Question": _fill(state(attr), who, "__"), "Ground_Truth": profile[key]})
    return {"Classification_Task": classification, "Generation_Task": generation, "Mask_Task": mask}


def _biography(p: dict) -> str:
    n = p["name"]
    return (
        f"{n} was born in {p['birth_year']} in {p['birthplace']}. {n} works as a {p['occupation']} "
        f"and studied {p['education']} at university. In free time {n} enjoys {p['hobby']} "
        f"and has a pet {p['pet']}."
    )


def _ft_metadata(p: dict) -> str:
    """Image-mode Q/A pairs covering the name and every attribute (the fine-tuning facts)."""
    pairs = [{"Question": NAME_QUESTION, "Answer": f"This person is {p['name']}."}]
    for attr in ATTRIBUTES:
        pairs.append(
            {"Question": _fill(attr.question, THIS_PERSON), "Answer": _fill(attr.statement, THIS_PERSON, p[attr.key])}
        )
    return json.dumps(pairs)


# ----------------------------------------------------------------------------- schema

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_MC = pa.struct(
    [
        ("Question", pa.string()),
        ("Options", pa.struct([(L, pa.string()) for L in LETTERS])),
        ("Correct_Answer", pa.string()),
    ]
)
_QA = pa.struct([("Type", pa.string()), ("Question", pa.string()), ("Ground_Truth", pa.string())])
PROFILE_SCHEMA = pa.schema(
    [
        ("image", _IMAGE),
        ("ID", pa.string()),
        ("Directory", pa.string()),
        ("biography", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        (
            "Classification_Task",
            pa.struct([("Image_Textual_Questions", pa.list_(_MC)), ("Pure_Text_Questions", pa.list_(_MC))]),
        ),
        ("Generation_Task", pa.list_(_QA)),
        ("Mask_Task", pa.list_(_QA)),
    ]
)
TEST_SCHEMA = PROFILE_SCHEMA.append(pa.field("images", pa.list_(_IMAGE)))
FT_SCHEMA = pa.schema([("image", _IMAGE), ("ID", pa.string()), ("metadata", pa.string())])


def _write(rows: list[dict], schema: pa.Schema, out: Path, config: str) -> None:
    folder = out / config
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, folder / PARQUET_NAME, compression="zstd", write_statistics=False, store_schema=True)


# ----------------------------------------------------------------------------- build


def forget_count(n_profiles: int, percent: int) -> int:
    """Profiles in forget_{percent}: percent% of the fictitious profiles (at least 1)."""
    return max(1, n_profiles * percent // 100)


def _row(rng: random.Random, p: dict, names: tuple[str, ...], paraphrase: bool) -> dict:
    """One profile row in the benchmark schema (the image, biography and every question)."""
    return {
        "image": {"bytes": _png(p["portrait"]), "path": f"{p['ID']}.png"},
        "ID": p["ID"],
        "Directory": p["name"].replace(" ", "_"),
        "biography": _biography(p),
        "question": (rng.choice(NAME_PARAPHRASES) if paraphrase else NAME_QUESTION),
        "answer": p["name"],
        **_profile_questions(rng, p, names, paraphrase),
    }


def _new_profiles(rng: random.Random, names, colours, first_id: int) -> list[dict]:
    profiles = []
    for i, (name, colour) in enumerate(zip(names, colours)):
        p: dict[str, Any] = {
            "ID": str(first_id + i),
            "name": name,
            **{a.key: rng.choice(a.values) for a in ATTRIBUTES},
        }
        p["portrait"] = draw_portrait(_portrait_spec(rng, colour))
        profiles.append(p)
    return profiles


def build_minibench(
    out: str | Path, seed: int = 0, n_profiles: int = 60, n_celebrities: int = 20, n_holdout: int = HOLDOUT_PROFILES
) -> Path:
    """Write every MLLMU-Bench config folder under `out`; returns the folder.

    forget_5 ⊂ forget_10 ⊂ forget_15 (as in the real benchmark), retain_{100-N} is the rest of
    Full_Set, Test_Set holds every fictitious profile with 2 transformed images and
    paraphrased questions, Retain_Set the celebrities, ft_Data one row per profile.

    Holdout_Set (our extension; MLLMU-Bench has none) holds `n_holdout` further fictitious
    profiles in the same schema: names and colour combinations no other profile has, attributes
    from the same pools, asked with the forget set's templates. They are in no other config, so
    no model trained on this bench has seen them: the non-members of membership inference. They
    are drawn from their own random stream after everything else, so the other configs are
    byte-identical with or without them.
    """
    if n_profiles < 1 or n_celebrities < 1 or n_holdout < 0:
        raise ConfigError(
            f"profile counts must be positive, got {n_profiles} profiles, {n_celebrities} celebrities "
            f"and {n_holdout} holdout profiles"
        )
    total = n_profiles + n_celebrities
    limit = min(len(FIRST_NAMES) * len(LAST_NAMES), len(BACKGROUNDS) * len(SKINS) * len(HAIRS))
    if total + n_holdout > limit:
        raise ConfigError(
            f"at most {limit} profiles have unique names and colour combinations, asked for {total + n_holdout}"
        )
    out = Path(out)
    rng = random.Random(seed)
    all_names = [(f, l) for f in FIRST_NAMES for l in LAST_NAMES]
    all_colours = [(b, s, h) for b in BACKGROUNDS for s in SKINS for h in HAIRS]
    names = tuple(f"{f} {l}" for f, l in rng.sample(all_names, total))
    colours = rng.sample(all_colours, total)
    profiles = _new_profiles(rng, names, colours, 1)

    def row(p: dict, paraphrase: bool) -> dict:
        return _row(rng, p, names, paraphrase)

    fictitious = profiles[:n_profiles]
    base_rows = [row(p, False) for p in profiles]
    full, celeb_rows = base_rows[:n_profiles], base_rows[n_profiles:]

    test_rows = []
    for p in fictitious:
        r = row(p, True)
        r["images"] = [
            {"bytes": _png(transform_portrait(p["portrait"], rng)), "path": f"{p['ID']}_{k}.png"} for k in range(2)
        ]
        test_rows.append(r)

    order = [p["ID"] for p in fictitious]
    rng.shuffle(order)
    _write(full, PROFILE_SCHEMA, out, "Full_Set")
    for pct in FORGET_PERCENTS:
        forget_ids = set(order[: forget_count(n_profiles, pct)])
        _write([r for r in full if r["ID"] in forget_ids], PROFILE_SCHEMA, out, f"forget_{pct}")
        _write([r for r in full if r["ID"] not in forget_ids], PROFILE_SCHEMA, out, f"retain_{100 - pct}")
    _write(test_rows, TEST_SCHEMA, out, "Test_Set")
    _write(celeb_rows, PROFILE_SCHEMA, out, "Retain_Set")
    _write(
        [{"image": r["image"], "ID": r["ID"], "metadata": _ft_metadata(p)} for r, p in zip(base_rows, profiles)],
        FT_SCHEMA,
        out,
        "ft_Data",
    )
    if n_holdout:
        hold = random.Random(f"holdout:{seed}")
        taken_names, taken_colours = set(names), set(colours)
        free_names = [n for f, l in all_names if (n := f"{f} {l}") not in taken_names]
        hold_names = tuple(hold.sample(free_names, n_holdout))
        hold_colours = hold.sample([c for c in all_colours if c not in taken_colours], n_holdout)
        holdout = _new_profiles(hold, hold_names, hold_colours, total + 1)
        schema = PROFILE_SCHEMA.with_metadata({"description": HOLDOUT_DESCRIPTION})
        _write([_row(hold, p, names + hold_names, False) for p in holdout], schema, out, HOLDOUT_CONFIG)
    return out


def expected_counts(n_profiles: int = 60, n_celebrities: int = 20, forget: int = 5) -> dict:
    """The counts load_benchmark(...).counts() must report for a build with these sizes."""
    n_forget = forget_count(n_profiles, forget)
    per_profile = {
        "classification": {"image_text": len(ATTRIBUTES) + 1, "text_only": len(ATTRIBUTES)},
        "generation": {"image_text": len(GENERATION_ATTRIBUTES), "text_only": len(GENERATION_ATTRIBUTES)},
        "cloze": {"image_text": len(CLOZE_ATTRIBUTES), "text_only": len(CLOZE_ATTRIBUTES)},
    }
    sizes = {"forget": n_forget, "test": n_forget, "retain": n_profiles - n_forget, "celebrity": n_celebrities}
    return {
        "profiles": sizes,
        "questions": {
            s: {t: {m: n * k for m, k in modes.items()} for t, modes in per_profile.items()} for s, n in sizes.items()
        },
    }
