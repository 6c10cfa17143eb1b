"""CLEAR (`therem/CLEAR`, formerly `therem/faces_v1`): fictitious persons (TOFU's authors) with
face images and captions, plus their TOFU text QA, and real faces / real-world VQA for utility.

Layout: one folder per config of parquet files (`forget05_perturbed/train-00000-of-00001.parquet`);
the ratios are zero-padded (`--forget 1|5|10` reads forget01/05/10 and retain99/95/90). Sets:

- forget: the forget persons. image+text: captions (`caption`) and face recognition (`name`) of
  `forget{r}_perturbed`; text-only: the TOFU QA rows of `forget{r}+tofu` (rows without an image).
- retain: the same from `retain_perturbed` and `retain{100-r}+tofu`.
- real: `real_faces` (face -> name) and `real_world` (VQA), image+text only: general knowledge.

Question types: `caption` (image+text: a caption question -> the caption; text-only: TOFU's
question -> answer), `face` (the person's name from the image), `vqa` (real_world).

Two protocols (`--protocol`), which score the same people differently:

- `clear` (the official code, somvy/multimodal_unlearning mm/eval.py + mm/calculate_metrics.py):
  six tasks on the first 300 rows each; per question the answer's probability, the truth ratio
  against the paraphrased and perturbed answers, and ROUGE-L recall of a greedy generation.
  Forget quality against a gold model is the `clear_forget_quality` stage.
- `clear-mmunlearner` (Z1zs/MMUnlearner CLEAR_eval.py): identity multiple choice built from the
  perturbed names with seed 42, real_faces / real_world multiple choice, and ROUGE / BLEU
  generation on the +tofu configs (captions image+text, TOFU QA text-only), no row cap.

Where mmunlearn differs from the published code, on purpose (docs/benchmarks.md has the list):
- `clear`: the caption question is drawn per row with the run's seed (upstream: unseeded
  `random.choice`, drawn again in each of the gt / paraphrase / perturbed passes; here one
  question per row serves all three, recorded in the manifest). The ROUGE generation sees the
  image (upstream decodes the prompt to text and generates without `pixel_values`); the
  upstream behaviour is `--bench-option generation_image=false`.
- `clear-mmunlearner`: the QA loop scores its own generations (upstream scores the last image
  answer), and text rows are asked without an empty image placeholder; the retain multiple
  choice reads the hub's `retain_perturbed` (upstream reads a `retain{r}_perturbed` no script
  makes).
- Text-only figures of the forget and retain sets (TOFU rows) are scored under both protocols;
  CLEAR has no paraphrased or perturbed TOFU answers, so their truth ratio is not available.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmunlearn.harness.core.bench import (
    picture_id,
    Benchmark,
    BenchmarkPlugin,
    BenchOptions,
    BenchSource,
    Protocol,
    image_bytes,
    read_rows,
    register_benchmark,
    show,
    text_field,
)
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.core.mmunlearner_choice import CAPTION_QUESTIONS, IDENTITY_QUESTION, OptionOrder, option_letter
from mmunlearn.harness.core.records import FactPair, Profile, Question

FORGET_SPLITS = (1, 5, 10)
FACE_PROMPT = "The name of the person on the image is "  # mm/dataset.py: the face-recognition prompt
OFFICIAL_ROWS = 300  # config/mm/eval.yaml ds_size: every official task reads its first 300 rows
IMAGE_ROW = ("image", "caption", "name")
PERTURBED_ROW = IMAGE_ROW + ("paraphrased_caption", "perturbed_captions", "perturbed_names")
TOFU_ROW = ("image", "caption", "question", "answer")
LAYOUT_CONFIGS = ("forget05_perturbed", "retain_perturbed", "real_faces", "real_world")  # what `detect` looks for
IT, TO = "image_text", "text_only"


def split_configs(forget: int) -> dict[str, str]:
    """The config names of one forget split (zero-padded ratios, retain = 100 - forget)."""
    return {
        "forget": f"forget{forget:02d}",
        "forget_perturbed": f"forget{forget:02d}_perturbed",
        "forget_tofu": f"forget{forget:02d}+tofu",
        "retain": f"retain{100 - forget:02d}",
        "retain_tofu": f"retain{100 - forget:02d}+tofu",
    }


@register_benchmark
class Clear(BenchmarkPlugin):
    """CLEAR: forget / retain / real sets; captions and TOFU QA, face recognition, real-world VQA."""

    name = "clear"
    description = "CLEAR (faces, captions and TOFU QA of fictitious persons; real faces and real-world VQA)"
    hub_ids = ("therem/CLEAR", "therem/faces_v1")
    embedded = "mini-clear"
    forget_splits = FORGET_SPLITS
    default_forget = 5
    layout = {
        "forget": {"caption": (IT, TO), "face": (IT,)},
        "retain": {"caption": (IT, TO), "face": (IT,)},
        "real": {"face": (IT,), "vqa": (IT,)},
    }
    titles = {"real": "Real set (real faces and real-world questions)"}
    protocols = (
        Protocol(
            "clear",
            "official CLEAR: probability, truth ratio, ROUGE-L recall on the first 300 rows; forget quality stage",
            tasks=("clear_caption", "clear_face", "clear_vqa"),
            stages=("clear_forget_quality",),
            max_new_tokens=300,  # config/mm/eval.yaml
            seed_draws="each image row's caption question",
        ),
        Protocol(
            "clear-mmunlearner",
            "MMUnlearner's CLEAR_eval.py: seed-42 identity / real-world multiple choice, ROUGE and BLEU generation",
            tasks=("mmunlearner_generation", "mmunlearner_face", "mmunlearner_vqa"),
            stages=(),
            max_new_tokens=50,  # CLEAR_eval.py's generate calls
        ),
    )

    @dataclass
    class Options(BenchOptions):
        # `clear` only: generate the ROUGE answer without the image, as the official code does.
        generation_image: bool = True
        # `clear` only: one perturbed loss pooled over the file (official mm code) or per sample (TOFU).
        truth_ratio_averaging: Literal["pooled", "per-sample"] = "pooled"
        # Rows read per task: None = the protocol's (300 for clear, all for clear-mmunlearner).
        rows: int | None = None

        def __post_init__(self):
            if self.rows is not None and self.rows < 1:
                from mmunlearn.harness.core.errors import ConfigError

                raise ConfigError(f"benchmark 'clear': option rows={self.rows} is invalid; allowed: an integer >= 1")

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return all((folder / c).is_dir() for c in LAYOUT_CONFIGS)

    def load(self, source: BenchSource, forget: int, protocol: Protocol, seed: int, **options) -> Benchmark:
        opts = self.Options(**{k: v for k, v in options.items() if k in self.Options.__dataclass_fields__})
        configs = split_configs(forget)
        official = protocol.name == "clear"
        cap = opts.rows if opts.rows is not None else (OFFICIAL_ROWS if official else None)
        self._facts: dict[tuple[str, str], list[FactPair]] = {}
        builder = _Builder(seed)
        for set_name, perturbed_cfg, tofu_cfg in (
            ("forget", configs["forget_perturbed"], configs["forget_tofu"]),
            ("retain", "retain_perturbed", configs["retain_tofu"]),
        ):
            perturbed = _perturbed_rows(source, perturbed_cfg)
            tofu = _tofu_rows(source, tofu_cfg)
            plain = configs["forget"] if set_name == "forget" else configs["retain"]
            names = _caption_names(source, plain, perturbed)
            people = list(dict.fromkeys(names.values()))
            order = OptionOrder()  # upstream: one process per set, seeded 42 at import
            if official:
                for row, r in enumerate(perturbed[:cap]):
                    builder.official_image_rows(set_name, perturbed_cfg, row, r)
            else:
                for row, r in enumerate(perturbed[:cap]):
                    builder.choice(
                        set_name,
                        "face",
                        row,
                        r["name"],
                        r["image"],
                        IDENTITY_QUESTION,
                        r["name"],
                        r["perturbed_names"],
                        order,
                        perturbed_cfg,
                    )
            image_rows = [(row, r) for row, r in enumerate(tofu) if r["image"] is not None]
            text_rows = [(row, r) for row, r in enumerate(tofu) if r["image"] is None]
            if not official:  # generation on the +tofu image rows: the caption questions come next in the stream
                drawn = order.draw_caption_questions(len(image_rows))
                for (row, r), question in list(zip(image_rows, drawn))[:cap]:
                    pid = _person(names.get(r["caption"]), r["image"], people)
                    builder.add(set_name, pid, "caption", IT, question, r["caption"], image=r["image"])
            for row, r in text_rows[:cap]:
                pid = _person(_named_in(r["question"], people), None, people, fallback=f"{tofu_cfg}#{row}")
                builder.add(set_name, pid, "caption", TO, r["question"], r["answer"])
            self._facts.update(_fact_pairs(set_name, image_rows, text_rows, names, people, seed))
        faces = read_rows(source.table("real_faces"), "real_faces", ("image", "answer", "options"))
        world = read_rows(source.table("real_world"), "real_world", ("image", "question", "answer", "options"))
        faces_order, world_order = OptionOrder(), OptionOrder()  # upstream: their own processes
        for row, r in enumerate(faces[:cap]):
            image = image_bytes(r["image"], "real_faces", row, "image")
            answer = text_field(r["answer"], "real_faces", row, "answer")
            wrong = _texts(r["options"], "real_faces", row, "options")
            if official:
                builder.add(
                    "real",
                    _slug(answer),
                    "face",
                    IT,
                    FACE_PROMPT,
                    answer,
                    image=image,
                    paraphrase=answer,
                    perturbed=wrong,
                )
            else:
                builder.choice(
                    "real", "face", row, answer, image, IDENTITY_QUESTION, answer, wrong, faces_order, "real_faces"
                )
        for row, r in enumerate(world[:cap]):
            image = image_bytes(r["image"], "real_world", row, "image")
            question = text_field(r["question"], "real_world", row, "question")
            answer = text_field(r["answer"], "real_world", row, "answer")
            wrong = _texts(r["options"], "real_world", row, "options")
            pid = picture_id(image)  # one picture = one subject
            if official:
                builder.add("real", pid, "vqa", IT, question, answer, image=image, paraphrase=answer, perturbed=wrong)
            else:
                builder.choice("real", "vqa", row, pid, image, question, answer, wrong, world_order, "real_world")
        return Benchmark(
            source=source.source,
            forget=forget,
            fingerprint=source.hash.hexdigest(),
            profiles=builder.profiles(self.sets()),
            plugin=self,
            notes=builder.notes,
        )

    def fact_pairs(self, bench: Benchmark, set_name: str, mode: str) -> list[FactPair]:
        """What CLEAR's methods train on: the +tofu config of the split (`forget{r}+tofu`,
        `retain{100-r}+tofu`): image rows as (a caption question drawn per row, the same under every seed, caption)
        with the image, TOFU rows as text QA. The real set has none."""
        return list(self._facts.get((set_name, mode), []))


# ----------------------------------------------------------------------------- rows -> records


class _Builder:
    """Collects questions per (set, person) in reading order; qid "{set}/{person}/{type}/{mode}/{k}"."""

    def __init__(self, seed: int):
        self.seed = seed
        self.by_person: dict[str, dict[str, list[Question]]] = {}
        self.images: dict[tuple[str, str], bytes] = {}
        self.notes: dict[str, dict[str, str]] = {"caption_questions": {}}

    def add(self, set_name, pid, qtype, mode, text, answer, image=None, options=None, paraphrase=None, perturbed=()):
        questions = self.by_person.setdefault(set_name, {}).setdefault(pid, [])
        k = sum(1 for q in questions if q.task == qtype and q.mode == mode)
        q = Question(
            f"{set_name}/{pid}/{qtype}/{mode}/{k}",
            set_name,
            qtype,
            mode,
            pid,
            text,
            answer,
            options,
            image if mode == IT else None,
            paraphrase,
            tuple(perturbed),
        )
        questions.append(q)
        if image is not None:
            self.images.setdefault((set_name, pid), image)
        if qtype == "caption" and mode == IT:
            self.notes["caption_questions"][q.qid] = text
        return q

    def official_image_rows(self, set_name: str, config: str, row: int, r: dict) -> None:
        """One `_perturbed` row: its caption question (drawn with the seed) and its face question."""
        pid = _slug(r["name"])
        question = random.Random(f"clear-caption/{self.seed}/{config}/{row}").choice(CAPTION_QUESTIONS)
        self.add(
            set_name,
            pid,
            "caption",
            IT,
            question,
            r["caption"],
            image=r["image"],
            paraphrase=r["paraphrased_caption"],
            perturbed=r["perturbed_captions"],
        )
        self.add(
            set_name,
            pid,
            "face",
            IT,
            FACE_PROMPT,
            r["name"],
            image=r["image"],
            paraphrase=r["name"],
            perturbed=r["perturbed_names"],
        )

    def choice(self, set_name, qtype, row, person, image, question, answer, wrong, order: OptionOrder, config):
        """A multiple-choice question: the answer inserted among the wrong options by `order`."""
        try:
            options, letter = order.insert(answer, wrong)
        except ValueError as exc:
            raise BenchmarkError(config, row, "options", str(exc)) from exc
        lettered = {option_letter(i): o for i, o in enumerate(options)}
        self.add(
            set_name,
            _slug(person) if qtype == "face" else person,
            qtype,
            IT,
            question,
            letter,
            image=image,
            options=lettered,
            paraphrase=answer,
        )

    def profiles(self, sets: tuple[str, ...]) -> dict[str, tuple[Profile, ...]]:
        out = {}
        for s in sets:
            people = self.by_person.get(s, {})
            out[s] = tuple(
                Profile(
                    id=pid,
                    set=s,
                    biography="",
                    image=self.images.get((s, pid), b""),
                    vqa_question=FACE_PROMPT,
                    vqa_answer=pid,
                    questions=tuple(qs),
                )
                for pid, qs in people.items()
            )
        return out


def _slug(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip())


def _texts(value, config: str, row: int, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise BenchmarkError(config, row, field, f"expected a non-empty list of texts, got {show(value)}")
    return tuple(text_field(v, config, row, f"{field}[{i}]") for i, v in enumerate(value))


def _perturbed_rows(source: BenchSource, config: str) -> list[dict]:
    """A `_perturbed` config's rows, validated; perturbed lists of equal length (the official
    collator stacks them)."""
    out = []
    width: dict[str, int] = {}
    for row, r in enumerate(read_rows(source.table(config), config, PERTURBED_ROW)):
        item = {
            "image": image_bytes(r["image"], config, row, "image"),
            "caption": text_field(r["caption"], config, row, "caption"),
            "name": text_field(r["name"], config, row, "name"),
            "paraphrased_caption": text_field(r["paraphrased_caption"], config, row, "paraphrased_caption"),
            "perturbed_captions": _texts(r["perturbed_captions"], config, row, "perturbed_captions"),
            "perturbed_names": _texts(r["perturbed_names"], config, row, "perturbed_names"),
        }
        for key in ("perturbed_captions", "perturbed_names"):
            n = width.setdefault(key, len(item[key]))
            if len(item[key]) != n:
                raise BenchmarkError(config, row, key, f"has {len(item[key])} entries, the rows before have {n}")
        out.append(item)
    if not out:
        raise BenchmarkError(config, None, None, "the config has no rows")
    return out


def _tofu_rows(source: BenchSource, config: str) -> list[dict]:
    """A `+tofu` config's rows: image rows (image, caption) and TOFU text rows (question, answer)."""
    out: list[dict] = []
    for row, r in enumerate(read_rows(source.table(config), config, TOFU_ROW)):
        if r["image"] is None:
            out.append(
                {
                    "image": None,
                    "caption": None,
                    "question": text_field(r["question"], config, row, "question"),
                    "answer": text_field(r["answer"], config, row, "answer"),
                }
            )
        else:
            out.append(
                {
                    "image": image_bytes(r["image"], config, row, "image"),
                    "caption": text_field(r["caption"], config, row, "caption"),
                    "question": None,
                    "answer": None,
                }
            )
    if not any(r["image"] is None for r in out):
        raise BenchmarkError(config, None, "image", "no TOFU text rows (rows without an image)")
    return out


def _caption_names(source: BenchSource, plain_config: str, perturbed: list[dict]) -> dict[str, str]:
    """caption -> person name, from the plain image config of the split (`forget05`, `retain95`:
    the +tofu configs have no name column) and the perturbed rows."""
    names = {r["caption"]: r["name"] for r in perturbed}
    for row, r in enumerate(read_rows(source.table(plain_config), plain_config, IMAGE_ROW)):
        caption = text_field(r["caption"], plain_config, row, "caption")
        names.setdefault(caption, text_field(r["name"], plain_config, row, "name"))
    return names


def _named_in(text: str, people: list[str]) -> str | None:
    """The longest known person's name that occurs in `text` (TOFU rows carry no name column)."""
    hits = [p for p in people if p and p in text]
    return max(hits, key=len) if hits else None


def _person(name: str | None, image: bytes | None, people: list[str], fallback: str | None = None) -> str:
    """A question's person id: the name when known, else the picture (one image = one person), else the row."""
    if name is not None:
        return _slug(name)
    if image is not None:
        return picture_id(image)
    return fallback or "unknown"


def _fact_pairs(set_name, image_rows, text_rows, names, people, seed) -> dict[tuple[str, str], list[FactPair]]:
    image_pairs = [
        FactPair(
            _person(names.get(r["caption"]), r["image"], people),
            IT,
            random.Random(f"clear-train/{set_name}/{row}").choice(CAPTION_QUESTIONS),  # the same under every seed
            r["caption"],
            r["image"],
        )
        for row, r in image_rows
    ]
    text_pairs = [
        FactPair(_person(_named_in(r["question"], people), None, people, f"tofu#{row}"), TO, r["question"], r["answer"])
        for row, r in text_rows
    ]
    return {(set_name, IT): image_pairs, (set_name, TO): text_pairs}
