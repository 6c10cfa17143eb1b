"""MMMU (`MMMU/MMMU`, one config per subject; the merged `lmms-lab/MMMU`): college-level
multiple-choice and open questions over images, a general-ability (utility) suite.

Read: the validation split (`load_benchmark`'s `split` option reads another), every subject folder of a
local copy (`<root>/<Subject>/validation-*.parquet`) or the merged layout
(`<root>/data/validation-*.parquet`). Only `image_1` is given to the model, as the official
runner does; `<image N>` placeholders stay in the text. Columns read: id, question, options (a
string holding a Python list), answer, question_type, image_1. Set `mmmu`, question type `mmmu`,
one cluster per picture (profile bootstrap). Protocols: `mmmu` (the official prompt and parser,
tasks/mmmu.py) and `mmmu-lmms-eval` (lmms-eval 0.7.3's, for comparison with lmms-eval numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmunlearn.harness.core.bench import (
    profiles_by_picture,
    picture_id,
    Benchmark,
    BenchmarkPlugin,
    BenchOptions,
    BenchSource,
    Protocol,
    image_bytes,
    read_rows,
    register_benchmark,
    text_field,
)
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.core.mmmu_eval import SUBJECTS, option_letters, parse_options, subject_of
from mmunlearn.harness.core.records import Question

COLUMNS = ("id", "question", "options", "answer", "question_type", "image_1")
MERGED = "data"  # lmms-lab/MMMU: one config, every subject


@register_benchmark
class MMMU(BenchmarkPlugin):
    """MMMU validation: accuracy per subject and overall (a utility suite)."""

    name = "mmmu"
    description = "MMMU (college-level multiple choice and open questions over images; utility)"
    hub_ids = ("MMMU/MMMU", "lmms-lab/MMMU")
    forget_splits = (0,)
    default_forget = 0
    utility = True
    embedded = "mini-utility/mmmu"
    titles = {"mmmu": "MMMU (utility)"}
    layout = {"mmmu": {"mmmu": ("image_text",)}}
    protocols = (
        Protocol(
            "mmmu", "the official MMMU prompt, parser and seeded random fallback", tasks=("mmmu",), max_new_tokens=128
        ),
        Protocol(
            "mmmu-lmms-eval",
            "lmms-eval 0.7.3's mmmu_val prompt and parser",
            tasks=("mmmu_lmms_eval",),
            max_new_tokens=128,
        ),
    )

    @dataclass
    class Options(BenchOptions):
        split: str = "validation"

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return any(folder.glob("*/validation-*.parquet")) and not (folder / "forget05_perturbed").is_dir()

    def load(self, source: BenchSource, forget: int, protocol: Protocol, seed: int, **options) -> Benchmark:
        split = options.get("split", "validation")
        configs = _configs(source, split)
        questions: list[Question] = []
        index = 0
        for config in configs:
            table = source.table(config, split=split, hub_config=None if config == MERGED else config)
            for row, r in enumerate(read_rows(table, config, COLUMNS)):
                qid_row = text_field(r["id"], config, row, "id")
                image = image_bytes(r["image_1"], config, row, "image_1")
                qtype = text_field(r["question_type"], config, row, "question_type")
                try:
                    choices = parse_options(r["options"]) if r["options"] is not None else []
                except ValueError as exc:
                    raise BenchmarkError(config, row, "options", str(exc)) from exc
                if qtype == "multiple-choice" and not choices:
                    raise BenchmarkError(config, row, "options", "a multiple-choice question without options")
                answer = r["answer"]
                if not isinstance(answer, str) or not answer.strip():
                    raise BenchmarkError(config, row, "answer", f"expected the gold answer, got {answer!r}")
                letters = option_letters(len(choices)) if qtype == "multiple-choice" else []
                if letters and answer not in letters:
                    raise BenchmarkError(config, row, "answer", f"{answer!r} is not one of the options {letters}")
                subject = subject_of(qid_row) if config == MERGED else config
                pid = picture_id(image)
                questions.append(
                    Question(
                        qid=f"mmmu/{subject}/mmmu/image_text/{qid_row}",
                        set="mmmu",
                        task="mmmu",
                        mode="image_text",
                        profile_id=pid,
                        text=text_field(r["question"], config, row, "question"),
                        answer=answer,
                        options=dict(zip(letters, choices)) if letters else None,
                        image=image,
                        meta={"subject": subject, "question_type": qtype, "index": str(index), "id": qid_row},
                    )
                )
                index += 1
        if not questions:
            raise BenchmarkError("(root)", None, None, f"no MMMU rows in the {split} split")
        return Benchmark(
            source=source.source,
            forget=forget,
            fingerprint=source.hash.hexdigest(),
            profiles={"mmmu": profiles_by_picture("mmmu", questions)},
            plugin=self,
        )

    def fact_pairs(self, bench, set_name, mode):
        return []  # a utility suite: nothing to unlearn


def _configs(source: BenchSource, split: str) -> list[str]:
    """The subject configs to read: the local folders holding the split (or the merged `data`
    folder), or on the hub the 30 official subjects (the merged copy: its one config)."""
    if source.is_local:
        if any((source.local / MERGED).glob(f"{split}-*.parquet")):
            return [MERGED]
        found = sorted(p.name for p in source.local.iterdir() if p.is_dir() and any(p.glob(f"{split}-*.parquet")))
        if not found:
            raise BenchmarkError("(root)", None, None, f"{source.source}: no subject folder with {split}-*.parquet")
        official = [s for s in SUBJECTS if s in found]
        return official + [s for s in found if s not in official]
    return [MERGED] if source.source == "lmms-lab/MMMU" else list(SUBJECTS)
