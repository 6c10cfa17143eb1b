"""MME (`lmms-lab/MME`) and POPE (`lmms-lab/POPE`): yes/no questions about an image, as utility
suites. MME asks two questions per image (one yes, one no) in 14 categories: acc, acc+ (both
right) and their sum x 100 per category, perception and cognition sums. POPE asks whether an
object is in the image, in three splits (adversarial, popular, random): accuracy, precision,
recall, F1 and yes-ratio. Layout: `<root>/data/test-*.parquet`. One cluster per picture.
Protocols: `prefix` (the answer read from a yes/no prefix, as FIUBench and MME's own tool do;
the default) and `exact` (lmms-eval's POPE: only a bare "yes"/"no")."""

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
from mmunlearn.harness.core.records import Question

CONFIG, SPLIT = "data", "test"


class YesNoSuite(BenchmarkPlugin):
    columns: tuple[str, ...] = ()
    group: str = "category"  # MME: the category; POPE: the split
    pair: str = ""  # the column naming an image's question pair (MME: question_id)

    @classmethod
    def detect(cls, folder: Path) -> bool:
        import pyarrow.parquet as pq

        files = sorted((folder / CONFIG).glob(f"{SPLIT}-*.parquet"))
        return bool(files) and set(cls.columns) <= set(pq.read_schema(files[0]).names) and cls._signature(files[0])

    @classmethod
    def _signature(cls, path) -> bool:
        return True

    def load(self, source: BenchSource, forget: int, protocol: Protocol, seed: int, **options) -> Benchmark:
        table = source.table(CONFIG, split=SPLIT, hub_config=None)
        set_name = self.name
        questions: list[Question] = []
        for row, r in enumerate(read_rows(table, CONFIG, self.columns)):
            image = image_bytes(r["image"], CONFIG, row, "image")
            answer = text_field(r["answer"], CONFIG, row, "answer")
            if answer.strip().lower() not in ("yes", "no"):
                raise BenchmarkError(CONFIG, row, "answer", f"expected yes or no, got {answer!r}")
            pid = picture_id(image)
            meta = {"group": text_field(r[self.group], CONFIG, row, self.group), "index": str(row)}
            if self.pair:
                meta["pair"] = str(r[self.pair])
            questions.append(
                Question(
                    qid=f"{set_name}/{meta['group']}/{set_name}/image_text/{row}",
                    set=set_name,
                    task=set_name,
                    mode="image_text",
                    profile_id=pid,
                    text=text_field(r["question"], CONFIG, row, "question"),
                    answer=answer,
                    image=image,
                    meta=meta,
                )
            )
        return Benchmark(
            source=source.source,
            forget=forget,
            fingerprint=source.hash.hexdigest(),
            profiles={set_name: profiles_by_picture(set_name, questions)},
            plugin=self,
        )

    def fact_pairs(self, bench, set_name, mode):
        return []


def _protocols(task: str, max_new_tokens: int) -> tuple[Protocol, ...]:
    return (
        Protocol(
            "prefix",
            "yes/no read from the reply's prefix (FIUBench, MME's tool)",
            tasks=(task,),
            max_new_tokens=max_new_tokens,
        ),
        Protocol(
            "exact",
            "only a bare yes/no counts (lmms-eval's POPE)",
            tasks=(f"{task}_exact",),
            max_new_tokens=max_new_tokens,
        ),
    )


@register_benchmark
class MME(YesNoSuite):
    """MME: acc, acc+ and score per category; perception and cognition sums."""

    name = "mme"
    description = "MME (yes/no pairs per image in 14 categories; utility)"
    hub_ids = ("lmms-lab/MME",)
    forget_splits = (0,)
    default_forget = 0
    utility = True
    embedded = "mini-utility/mme"
    titles = {"mme": "MME (utility)"}
    layout = {"mme": {"mme": ("image_text",)}}
    protocols = _protocols("mme", 3)  # FIUBench eval_mme.py: max_new_tokens=3
    columns = ("question_id", "image", "question", "answer", "category")
    pair = "question_id"

    @classmethod
    def _signature(cls, path) -> bool:
        import pyarrow.parquet as pq

        return "image_source" not in pq.read_schema(path).names


@register_benchmark
class POPE(YesNoSuite):
    """POPE: accuracy, precision, recall, F1, yes-ratio per split."""

    name = "pope"
    description = "POPE (is there an object in the image? adversarial, popular, random; utility)"
    hub_ids = ("lmms-lab/POPE",)
    forget_splits = (0,)
    default_forget = 0
    utility = True
    embedded = "mini-utility/pope"
    titles = {"pope": "POPE (utility)"}
    layout = {"pope": {"pope": ("image_text",)}}
    protocols = _protocols("pope", 5)  # FIUBench eval_pope.py: max_new_tokens=5
    columns = ("id", "question_id", "question", "answer", "image_source", "image", "category")
