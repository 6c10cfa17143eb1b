"""Build the embedded mini-CLEAR: the mini-bench's fictitious people in the CLEAR hub layout.

CLEAR (hub `therem/CLEAR`, arXiv 2410.18057) is a benchmark of face images of TOFU's fictitious
authors with one caption per image, plus TOFU's text QA. Its real data (3768 photos, ~200
people) needs a multi-billion-parameter model. This module rewrites the embedded mini-bench
(harness/embedded/minibench.py: 60 fictitious people the tiny model was trained on, 20
celebrities) into CLEAR's configs, column names and column types, so the harness can run CLEAR
end to end on the tiny model. Everything here is fictitious and generated; nothing is taken
from CLEAR's data.

Layout: `<out>/<config>/train-00000-of-00001.parquet` (only a `train` split, as on the hub) for
every config in CONFIGS, and `<out>/README.md` whose YAML header lists the configs' data files,
so `datasets.load_dataset(str(out), "forget10+tofu")` works as it does on the hub. The parquet
files carry the `huggingface` schema metadata the hub's files carry, so `datasets` decodes
`image` into a PIL image (pyarrow reads it as the struct {bytes: binary, path: string}).

Mapping (mini-bench -> CLEAR):

- People: the mini-bench's fictitious profiles (Full_Set, 60 people), in Full_Set (ID) order.
  One image row per person: the person's own 32x32 portrait (the image the tiny model was
  trained on; CLEAR has ~19 photos per person, the mini-bench one).
- Facts: read back from the mini-bench itself (the correct option of each Pure_Text
  classification question, checked against the Pure_Text generation ground truth), so the
  mini-bench's generator and output stay untouched.
- `caption` = CAPTION filled with the person's occupation, birthplace and pet ("Maria Irwin, a
  farmer from London, with a pet hamster."); `name` = the person's name. Every word is one the
  tiny model's word-level vocabulary already holds.
- Forget sets nest as on the hub: `forget01` = the first person of the mini-bench's forget_5,
  `forget05` = forget_5 (3 people), `forget10` = forget_10 (6 people); `retain{100-r}` = every
  other person (forget r and retain 100-r partition the people); `full` = everyone. With 60
  people forget01 holds 1 person (1.7%).
- `forget{r}_perturbed` / `retain_perturbed` add `paraphrased_caption` (PARAPHRASE, same
  facts), `perturbed_captions` (N_PERTURBED captions in the CAPTION template with the person's
  own name and the occupation, birthplace and pet of another person that differs from this
  person in all three, as TOFU's perturbed answers keep the subject and change the facts) and
  `perturbed_names` (N_PERTURBED other people's names). Drawn with a `random.Random` seeded per
  person (`mini-clear:{seed}:{ID}`), so a person's row is the same in every config;
  every row has the same list lengths (the official collator stacks them).
- `retain_perturbed` = the first N_RETAIN_PERTURBED people (Full_Set order) that are in no
  forget split of the mini-bench (not even forget_15, the demo's), hence never in forget10.
- `{forget,retain}{r}+tofu` = the config's image rows (image, caption; `question` and `answer`
  None) followed by text QA rows (image None, caption None, `question`, `answer`): each
  person's six Pure_Text generation questions and ground truths of the mini-bench, person by
  person. These play TOFU's role (facts about the same people in text form). As on the hub,
  +tofu configs have no `name` column: it is the concatenation of a CLEAR table without `name`
  and a TOFU table, missing columns filled with None (official `mm/dataset.py` tells rows apart
  by `image is None`; MMUnlearner's `CLEAR_process.py` by an empty `question`).
- `real_faces` = the mini-bench's celebrities (Retain_Set): image, `answer` = name, `options` =
  N_PERTURBED other celebrities' names. Wrong names only: the official eval scores them as the
  perturbed answers and MMUnlearner inserts the answer into them itself.
- `real_world` = the celebrities' Image_Textual classification questions except the name
  question (6 per celebrity: "What is the job of this person?"): image, `question`, `answer` =
  the correct value, `options` = the question's three mini-bench distractors (wrong only).

Columns are in the order CONFIG_COLUMNS lists (the hub's own order differs between configs and
uploads; read columns by name). The hub's `full+tofu` and `default` (`data/`) configs are not
built: `full` is the default here. Same mini-bench and seed -> byte-identical files (no
timestamps; parquet written as minibench.py writes it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmunlearn.harness.core.errors import BenchmarkError, ConfigError
from mmunlearn.harness.embedded.minibench import ATTRIBUTE_BY_KEY, PARQUET_NAME, _fill

MINIBENCH = Path(__file__).resolve().parent / "assets" / "minibench"
FORGET_RATIOS = (1, 5, 10)  # CLEAR's forget01/05/10
# CLEAR ratio -> mini-bench forget split it comes from (forget01: that split's first person).
SOURCE_SPLIT = {1: "forget_5", 5: "forget_5", 10: "forget_10"}
N_PERTURBED = 3
N_RETAIN_PERTURBED = 10
CAPTION = "{name}, a {occupation} from {birthplace}, with a pet {pet}."
PARAPHRASE = "{name} works as a {occupation}, comes from {birthplace} and keeps a pet {pet}."
CAPTION_FACTS = ("occupation", "birthplace", "pet")
FACT_KEYS = ("birth_year", "birthplace", "occupation", "education", "hobby", "pet")

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_TYPES = {
    "image": _IMAGE,
    "caption": pa.string(),
    "name": pa.string(),
    "question": pa.string(),
    "answer": pa.string(),
    "paraphrased_caption": pa.string(),
    "perturbed_captions": pa.list_(pa.string()),
    "perturbed_names": pa.list_(pa.string()),
    "options": pa.list_(pa.string()),
}
# The `datasets` feature of each column, as the hub's parquet files record it.
_FEATURES = {
    name: (
        {"_type": "Image"}
        if name == "image"
        else {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}
        if pa.types.is_list(t)
        else {"dtype": "string", "_type": "Value"}
    )
    for name, t in _TYPES.items()
}
PLAIN_COLUMNS = ("image", "caption", "name")
TOFU_COLUMNS = ("image", "caption", "question", "answer")
PERTURBED_COLUMNS = PLAIN_COLUMNS + ("paraphrased_caption", "perturbed_captions", "perturbed_names")
REAL_FACES_COLUMNS = ("image", "answer", "options")
REAL_WORLD_COLUMNS = ("image", "question", "answer", "options")


def _config_columns() -> dict[str, tuple[str, ...]]:
    columns: dict[str, tuple[str, ...]] = {"full": PLAIN_COLUMNS}
    for kind in ("forget", "retain"):
        for r in FORGET_RATIOS:
            name = f"{kind}{r:02d}" if kind == "forget" else f"retain{100 - r}"
            columns[name] = PLAIN_COLUMNS
            columns[f"{name}+tofu"] = TOFU_COLUMNS
            if kind == "forget":
                columns[f"{name}_perturbed"] = PERTURBED_COLUMNS
    columns["retain_perturbed"] = PERTURBED_COLUMNS
    columns["real_faces"] = REAL_FACES_COLUMNS
    columns["real_world"] = REAL_WORLD_COLUMNS
    return columns


CONFIG_COLUMNS = _config_columns()
CONFIGS = tuple(CONFIG_COLUMNS)


def schema(columns: tuple[str, ...]) -> pa.Schema:
    """The arrow schema of a config with these columns, with the hub's `huggingface` metadata."""
    features = {"info": {"features": {c: _FEATURES[c] for c in columns}}}
    return pa.schema([(c, _TYPES[c]) for c in columns], metadata={"huggingface": json.dumps(features)})


@dataclass(frozen=True)
class Person:
    """One mini-bench profile as the mini-CLEAR uses it."""

    id: str
    name: str
    image: dict  # {"bytes", "path"}
    facts: dict[str, str]  # FACT_KEYS -> value
    text_qa: tuple[tuple[str, str], ...]  # Pure_Text generation (question, ground truth)


def _rows(root: Path, config: str) -> list[dict]:
    path = root / config / PARQUET_NAME
    if not path.is_file():
        raise BenchmarkError(config, None, None, f"missing {path} (build the mini-bench first: build-minibench)")
    return pq.read_table(path).to_pylist()


def _person(row: dict, index: int, config: str = "Full_Set") -> Person:
    """Facts from the Pure_Text classification answers, cross-checked against the generation task."""
    name = row["answer"]
    by_question = {q["Question"]: q for q in row["Classification_Task"]["Pure_Text_Questions"]}
    generation = {g["Question"]: g["Ground_Truth"] for g in row["Generation_Task"] if g["Type"] == "Pure_Text"}
    facts = {}
    for key in FACT_KEYS:
        attr = ATTRIBUTE_BY_KEY[key]
        question = _fill(attr.question, name)
        item = by_question.get(question)
        if item is None or item["Correct_Answer"] not in item["Options"]:
            raise BenchmarkError(config, index, "Classification_Task", f"no answered question {question!r}")
        value = item["Options"][item["Correct_Answer"]]
        if generation.get(question) != _fill(attr.statement, name, value):
            raise BenchmarkError(config, index, "Generation_Task", f"{question!r} does not state {value!r}")
        facts[key] = value
    text_qa = tuple((q, a) for q, a in generation.items())
    return Person(row["ID"], name, row["image"], facts, text_qa)


def caption(person: Person, facts: dict[str, str] | None = None, template: str = CAPTION) -> str:
    """`template` filled with `person`'s name and `facts` (default: the person's own)."""
    facts = person.facts if facts is None else facts
    return template.format(name=person.name, **{k: facts[k] for k in CAPTION_FACTS})


def _perturbations(person: Person, people: list[Person], seed: int) -> dict:
    """paraphrased_caption, perturbed_captions, perturbed_names of one person (seeded per person)."""
    rng = random.Random(f"mini-clear:{seed}:{person.id}")
    others = [p for p in people if p.id != person.id]
    # Other people whose caption facts all differ from this person's: unambiguously wrong captions.
    wrong = [p for p in others if all(p.facts[k] != person.facts[k] for k in CAPTION_FACTS)]
    if len(wrong) < N_PERTURBED:
        raise ConfigError(
            f"{person.name}: only {len(wrong)} other people differ in {', '.join(CAPTION_FACTS)}; "
            f"{N_PERTURBED} perturbed captions need more people"
        )
    return {
        "paraphrased_caption": caption(person, template=PARAPHRASE),
        "perturbed_captions": [caption(person, p.facts) for p in rng.sample(wrong, N_PERTURBED)],
        "perturbed_names": [p.name for p in rng.sample(others, N_PERTURBED)],
    }


def _write(rows: list[dict], config: str, out: Path) -> int:
    folder = out / config
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema(CONFIG_COLUMNS[config]))
    pq.write_table(table, folder / PARQUET_NAME, compression="zstd", write_statistics=False, store_schema=True)
    return len(rows)


def _readme(counts: dict[str, int], people: dict[str, list[str]], seed: int) -> str:
    yaml = ["---", "configs:"]
    for config in CONFIGS:
        default = "  default: true\n" if config == "full" else ""
        yaml.append(f"- config_name: {config}\n{default}  data_files:\n  - split: train\n    path: {config}/train-*")
    yaml.append("---")
    table = "\n".join(
        f"| `{c}` | {counts[c]} | {', '.join(f'`{col}`' for col in CONFIG_COLUMNS[c])} |" for c in CONFIGS
    )
    sets = "\n".join(f"- {k}: {', '.join(v)}" for k, v in people.items())
    return f"""{chr(10).join(yaml)}

# mini-CLEAR (generated, fictitious)

The embedded mini-bench's fictitious people (`../minibench`, MLLMU-Bench layout) rewritten into
the layout of the CLEAR benchmark (hub `therem/CLEAR`): the same config names, column names and
column types, one `train` split per config. Nothing here comes from CLEAR's data: every person,
portrait, caption and question is generated (`mmunlearn build-minibench --clear`, seed {seed},
code: `harness/embedded/mini_clear.py`, whose docstring details the mapping).

- Image rows: one per person, the 32x32 portrait the tiny model was trained on; `caption` is
  built from the person's occupation, birthplace and pet, `name` is the person's name.
- forget01 = the first person of the mini-bench's forget_5, forget05 = forget_5, forget10 =
  forget_10; retain(100-r) = everyone else; full = all fictitious people.
- `_perturbed`: `paraphrased_caption` (another template, same facts), `perturbed_captions`
  (the person's name with another person's facts), `perturbed_names` (other people's names),
  {N_PERTURBED} each.
- `+tofu`: the image rows (question, answer empty) followed by text QA rows (image, caption
  empty): each person's text-only generation questions of the mini-bench, in TOFU's role.
- `real_faces`: the mini-bench's celebrities, `options` = other celebrities' names (wrong only).
- `real_world`: the celebrities' image questions with the correct value as `answer` and the
  three wrong values as `options`.

| config | rows | columns |
|---|---|---|
{table}

People (mini-bench ID and name):

{sets}
"""


def build_mini_clear(
    out: str | Path, minibench: str | Path = MINIBENCH, seed: int = 0, n_retain_perturbed: int = N_RETAIN_PERTURBED
) -> dict[str, int]:
    """Write every mini-CLEAR config under `out` from the mini-bench at `minibench`.

    Returns {config: rows written}. Same mini-bench and seed -> byte-identical files.
    """
    out, minibench = Path(out), Path(minibench)
    people = [_person(row, i) for i, row in enumerate(_rows(minibench, "Full_Set"))]
    by_id = {p.id: p for p in people}
    forget_ids = {}
    for r in FORGET_RATIOS:
        source = SOURCE_SPLIT[r]
        ids = [row["ID"] for row in _rows(minibench, source)]
        if not ids or not set(ids) <= by_id.keys():
            raise BenchmarkError(source, None, "ID", "must name at least one Full_Set profile, and only those")
        forget_ids[r] = ids[:1] if r == 1 else ids
    in_any_forget = {
        row["ID"] for d in sorted(minibench.glob("forget_*")) if d.is_dir() for row in _rows(minibench, d.name)
    }
    retain_perturbed = [p for p in people if p.id not in in_any_forget][:n_retain_perturbed]
    if n_retain_perturbed < 1 or len(retain_perturbed) < n_retain_perturbed:
        raise ConfigError(
            f"retain_perturbed needs {n_retain_perturbed} people outside every forget split "
            f"(at least 1); the mini-bench has {len([p for p in people if p.id not in in_any_forget])}"
        )
    perturbed = {p.id: _perturbations(p, people, seed) for p in people}

    def image_row(p: Person) -> dict:
        return {"image": p.image, "caption": caption(p), "name": p.name}

    def tofu_rows(group: list[Person]) -> list[dict]:
        images = [{"image": p.image, "caption": caption(p), "question": None, "answer": None} for p in group]
        texts = [{"image": None, "caption": None, "question": q, "answer": a} for p in group for q, a in p.text_qa]
        return images + texts

    counts = {"full": _write([image_row(p) for p in people], "full", out)}
    for r in FORGET_RATIOS:
        forget = [p for p in people if p.id in forget_ids[r]]
        retain = [p for p in people if p.id not in forget_ids[r]]
        for name, group in ((f"forget{r:02d}", forget), (f"retain{100 - r}", retain)):
            counts[name] = _write([image_row(p) for p in group], name, out)
            counts[f"{name}+tofu"] = _write(tofu_rows(group), f"{name}+tofu", out)
        counts[f"forget{r:02d}_perturbed"] = _write(
            [image_row(p) | perturbed[p.id] for p in forget], f"forget{r:02d}_perturbed", out
        )
    counts["retain_perturbed"] = _write(
        [image_row(p) | perturbed[p.id] for p in retain_perturbed], "retain_perturbed", out
    )

    celebrities = _rows(minibench, "Retain_Set")
    celebrity_names = [c["answer"] for c in celebrities]
    if len(celebrities) <= N_PERTURBED:
        raise ConfigError(
            f"real_faces needs more than {N_PERTURBED} celebrities, the mini-bench has {len(celebrities)}"
        )
    faces, world = [], []
    for i, c in enumerate(celebrities):
        rng = random.Random(f"mini-clear:{seed}:real_faces:{c['ID']}")
        options = rng.sample([n for n in celebrity_names if n != c["answer"]], N_PERTURBED)
        faces.append({"image": c["image"], "answer": c["answer"], "options": options})
        for q in c["Classification_Task"]["Image_Textual_Questions"][1:]:  # [0] asks the name
            if q["Correct_Answer"] not in q["Options"]:
                raise BenchmarkError("Retain_Set", i, "Classification_Task", f"bad answer letter in {q['Question']!r}")
            answer = q["Options"][q["Correct_Answer"]]
            wrong = [v for letter, v in sorted(q["Options"].items()) if letter != q["Correct_Answer"]]
            world.append({"image": c["image"], "question": q["Question"], "answer": answer, "options": wrong})
    counts["real_faces"] = _write(faces, "real_faces", out)
    counts["real_world"] = _write(world, "real_world", out)

    groups = {f"forget{r:02d}": [f"{i} {by_id[i].name}" for i in forget_ids[r]] for r in FORGET_RATIOS}
    groups["retain_perturbed"] = [f"{p.id} {p.name}" for p in retain_perturbed]
    groups["real_faces / real_world"] = [f"{c['ID']} {c['answer']}" for c in celebrities]
    (out / "README.md").write_bytes(_readme(counts, groups, seed).encode("utf-8"))
    return {c: counts[c] for c in CONFIGS}
