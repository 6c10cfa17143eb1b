"""In-context examples, drawn as the official MLLMU-Bench evaluation draws them, but seeded.

The official procedure (`eval.py`), per evaluated set and task:
- draw example profile IDs from the evaluated set's own ID list (`random.sample(ids, k)`; for
  the test set the forget IDs), k = 1 for classification, 2 for cloze with LLaVA and 1 with
  Idefics2; generation has none;
- read those profiles from `Full_Set` (the original image and questions) and prepend *all* of
  their questions of the question's mode, each with its answer, the example's image passed
  along in image mode (one copy per example question);
- prompt with them only on some sets: classification on forget, test and retain; cloze on all
  four. The celebrity IDs are not in `Full_Set`, so the celebrity set gets no examples at all;
- skip the example profiles' own questions in scoring (they are in the prompt).

We draw with a random.Random seeded by (seed, set, task) instead of the global unseeded RNG,
so a rerun or a resumed run uses the same examples; the drawn IDs go into the manifest.
`shots=0` switches examples off; `shots=N` draws N profiles for classification and cloze.
The skip covers every question of an example profile in the task; the official code skips by
position, which is the same thing when the example's Full_Set row and the evaluated row list
the same number of questions (true of MLLMU-Bench and the mini-bench).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.prompts import Example, example_text
from mmunlearn.harness.core.records import ImageDecoder, Profile, Question

OFFICIAL = "official"
OFFICIAL_PROFILES = {"classification": 1, "cloze": 2}
OFFICIAL_PROFILES_BY_ARCH: dict[tuple[str | None, str], int] = {("idefics2", "cloze"): 1}
PROMPTED_SETS = {"classification": ("forget", "test", "retain"), "cloze": ("forget", "test", "retain", "celebrity")}
ID_SOURCE = {"test": "forget"}  # the test set draws from the forget IDs, as the official code does


def parse_shots(value) -> str | int:
    """ "official" or a non-negative integer (CLI strings accepted)."""
    if isinstance(value, str) and value.strip().lower() == OFFICIAL:
        return OFFICIAL
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"shots must be 'official' or a number of example profiles, got {value!r}") from None
    if n < 0:
        raise ConfigError(f"shots must be >= 0, got {n}")
    return n


def profile_count(shots: str | int, task: str, arch: str | None) -> int:
    """How many example profiles a (task, model) gets."""
    if task not in PROMPTED_SETS:
        return 0
    if shots == OFFICIAL:
        return OFFICIAL_PROFILES_BY_ARCH.get((arch, task), OFFICIAL_PROFILES[task])
    return int(shots)


@dataclass(frozen=True)
class ExamplePlan:
    """The in-context examples of one (set, task)."""

    set: str
    task: str
    drawn: tuple[str, ...]  # IDs drawn from the set's ID list
    profiles: tuple[Profile, ...]  # those of them found in Full_Set, in Full_Set row order (as eval.py reads them)

    @property
    def prompted(self) -> bool:
        return bool(self.profiles) and self.set in PROMPTED_SETS.get(self.task, ())

    def skips(self, q: Question) -> bool:
        """True for a question of an example profile (excluded from scoring)."""
        return any(p.id == q.profile_id for p in self.profiles)

    def examples(self, mode: str, images: ImageDecoder) -> tuple[Example, ...]:
        """All example questions of `mode`, in profile then benchmark order."""
        if not self.prompted:
            return ()
        out = []
        for p in self.profiles:
            for q in p.questions:
                if q.task == self.task and q.mode == mode:
                    image = q.image if mode == "image_text" else None
                    out.append(Example(example_text(self.task, q.text, q.answer, q.options), images(image), image))
        return tuple(out)

    def record(self) -> dict:
        return {"drawn": list(self.drawn), "used": [p.id for p in self.profiles], "prompted": self.prompted}


def plan_examples(bench, set_name: str, task: str, shots: str | int, seed: int, arch: str | None = None) -> ExamplePlan:
    """Draw the example profiles of one (set, task) with an RNG seeded by (seed, set, task)."""
    k = profile_count(shots, task, arch)
    if k == 0:
        return ExamplePlan(set_name, task, (), ())
    ids = [p.id for p in bench.profiles[ID_SOURCE.get(set_name, set_name)]]
    if len(ids) < k:
        raise ConfigError(
            f"{k} in-context example profile(s) for {task} need at least {k} profiles in set "
            f"{set_name!r}; it has {len(ids)} (use --shots 0)"
        )
    drawn = tuple(random.Random(f"examples/{seed}/{set_name}/{task}").sample(ids, k))
    full = bench.full_set
    if full is None:
        raise ConfigError(
            "in-context examples are read from the benchmark's Full_Set config, which is missing (use --shots 0)"
        )
    # eval.py reads the examples with few_shot_df[few_shot_df['ID'].isin(selected_ids)]: in Full_Set
    # row order, not in draw order (full_set keeps the row order)
    chosen = set(drawn)
    return ExamplePlan(set_name, task, drawn, tuple(p for pid, p in full.items() if pid in chosen))
