"""CLEAR real_world as MMUnlearner scores it ("general VQA", Z1zs/MMUnlearner CLEAR_eval.py
eval_classification_real): each row's question with its options and the answer inserted at a
seed-42 position, the letter parsed from the reply (a utility suite).

Reads the `real_world` config of a CLEAR copy (`therem/CLEAR`, or a local folder such as the
mini-CLEAR). Set `clear_real_world`, question type `real_world_choice`, one cluster per picture.
"""

from __future__ import annotations


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
    show,
    text_field,
)
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.core.mmunlearner_choice import OptionOrder, option_letter
from mmunlearn.harness.core.records import Question

CONFIG = "real_world"
SET = "clear_real_world"


@register_benchmark
class ClearRealWorld(BenchmarkPlugin):
    """CLEAR real_world multiple choice, MMUnlearner's general-VQA accuracy."""

    name = "clear_real_world"
    description = "CLEAR real_world as MMUnlearner scores it (seed-42 multiple choice; utility)"
    hub_ids = ("therem/CLEAR", "therem/faces_v1")
    forget_splits = (0,)
    default_forget = 0
    utility = True
    embedded = "mini-clear"
    titles = {SET: "CLEAR real_world (utility, MMUnlearner's general VQA)"}
    layout = {SET: {"real_world_choice": ("image_text",)}}
    protocols = (
        Protocol(
            "clear-mmunlearner",
            "MMUnlearner's eval_classification_real",
            tasks=("clear_real_world",),
            max_new_tokens=50,
        ),
    )

    def load(self, source: BenchSource, forget: int, protocol: Protocol, seed: int, **options) -> Benchmark:
        order = OptionOrder()  # upstream: its own process, seeded 42 at import
        questions: list[Question] = []
        for row, r in enumerate(read_rows(source.table(CONFIG), CONFIG, ("image", "question", "answer", "options"))):
            image = image_bytes(r["image"], CONFIG, row, "image")
            answer = text_field(r["answer"], CONFIG, row, "answer")
            wrong = r["options"]
            if not isinstance(wrong, list) or not wrong or not all(isinstance(w, str) for w in wrong):
                raise BenchmarkError(CONFIG, row, "options", f"expected a non-empty list of texts, got {show(wrong)}")
            try:
                choices, letter = order.insert(answer, wrong)
            except ValueError as exc:
                raise BenchmarkError(CONFIG, row, "options", str(exc)) from exc
            pid = picture_id(image)
            questions.append(
                Question(
                    qid=f"{SET}/{pid}/real_world_choice/image_text/{row}",
                    set=SET,
                    task="real_world_choice",
                    mode="image_text",
                    profile_id=pid,
                    text=text_field(r["question"], CONFIG, row, "question"),
                    answer=letter,
                    options={option_letter(i): o for i, o in enumerate(choices)},
                    image=image,
                    paraphrase=answer,
                )
            )
        return Benchmark(
            source=source.source,
            forget=forget,
            fingerprint=source.hash.hexdigest(),
            profiles={SET: profiles_by_picture(SET, questions)},
            plugin=self,
        )

    def fact_pairs(self, bench, set_name, mode):
        return []
