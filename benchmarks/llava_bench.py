"""LLaVA-Bench in-the-wild (`lmms-lab/llava-bench-in-the-wild`): 60 open questions on 24 images
in three categories (conv, detail, complex), each with a GPT-4 reference answer, scored by an LLM
judge relative to that reference (a utility suite).

Layout: `<root>/data/train-*.parquet`, columns question_id, question, image, caption, gpt_answer,
category. Set `llava_bench`, question type `llava_bench`, one cluster per picture. Protocol
`llava-bench`: the original judge protocol (tasks/llava_bench.py).
"""

from __future__ import annotations

from pathlib import Path

from mmunlearn.harness.core.bench import (
    profiles_by_picture,
    picture_id,
    Benchmark,
    BenchmarkPlugin,
    BenchSource,
    Protocol,
    image_bytes,
    read_rows,
    register_benchmark,
    text_field,
)
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.core.llava_bench_judge import CATEGORIES
from mmunlearn.harness.core.records import Question

CONFIG, SPLIT = "data", "train"
COLUMNS = ("question_id", "question", "image", "caption", "gpt_answer", "category")


@register_benchmark
class LlavaBench(BenchmarkPlugin):
    """LLaVA-Bench in-the-wild: the judge's relative score per category and overall."""

    name = "llava_bench"
    description = "LLaVA-Bench in-the-wild (open answers judged against GPT-4 references; utility)"
    hub_ids = ("lmms-lab/llava-bench-in-the-wild",)
    forget_splits = (0,)
    default_forget = 0
    utility = True
    embedded = "mini-utility/llava-bench"
    titles = {"llava_bench": "LLaVA-Bench in-the-wild (utility)"}
    layout = {"llava_bench": {"llava_bench": ("image_text",)}}
    protocols = (
        Protocol(
            "llava-bench",
            "the original judge protocol (rule per category, reference as Assistant 1, strict parser)",
            tasks=("llava_bench",),
            max_new_tokens=1024,
        ),
    )

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return (
            any((folder / CONFIG).glob("train-*.parquet"))
            and (folder / "README.md").is_file()
            and _has(folder, "gpt_answer")
        )

    def load(self, source: BenchSource, forget: int, protocol: Protocol, seed: int, **options) -> Benchmark:
        table = source.table(CONFIG, split=SPLIT, hub_config=None)
        questions: list[Question] = []
        for row, r in enumerate(read_rows(table, CONFIG, COLUMNS)):
            image = image_bytes(r["image"], CONFIG, row, "image")
            category = text_field(r["category"], CONFIG, row, "category")
            if category not in CATEGORIES:
                raise BenchmarkError(CONFIG, row, "category", f"{category!r} is not one of {', '.join(CATEGORIES)}")
            pid = picture_id(image)
            questions.append(
                Question(
                    qid=f"llava_bench/{category}/llava_bench/image_text/{r['question_id']}",
                    set="llava_bench",
                    task="llava_bench",
                    mode="image_text",
                    profile_id=pid,
                    text=text_field(r["question"], CONFIG, row, "question"),
                    answer=text_field(r["gpt_answer"], CONFIG, row, "gpt_answer"),
                    image=image,
                    meta={"category": category, "caption": text_field(r["caption"], CONFIG, row, "caption")},
                )
            )
        return Benchmark(
            source=source.source,
            forget=forget,
            fingerprint=source.hash.hexdigest(),
            profiles={"llava_bench": profiles_by_picture("llava_bench", questions)},
            plugin=self,
        )

    def fact_pairs(self, bench, set_name, mode):
        return []


def _has(folder: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    files = sorted((folder / CONFIG).glob("train-*.parquet"))
    return bool(files) and column in pq.read_schema(files[0]).names
