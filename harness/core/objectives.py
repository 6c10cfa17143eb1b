"""What an unlearning run is trying to do, per set and input mode: which figures should fall.

The field has two targets. `forget-both` (MLLMU-Bench's and MANU's): the forget and test sets'
knowledge should fall in both modes, retain and celebrity should stay. `forget-visual`
(MMUnlearner's): erase the visual recognition of a person but keep what the model knows about
them in text, so forget/test image+text should fall while forget/test text-only should stay at
vanilla's level, like retain. Everything that judges a direction (check, the leaderboard's
markers and trade-off plot, `--select best`, the demo claims) reads it from here, with the
objective a run recorded in its results.json (absent: forget-both, the only target before).
"""

from __future__ import annotations

from mmunlearn.harness.core.errors import ConfigError

FORGET_BOTH = "forget-both"
FORGET_VISUAL = "forget-visual"
OBJECTIVES = (FORGET_BOTH, FORGET_VISUAL)
DEFAULT_OBJECTIVE = FORGET_BOTH
TARGET_SETS = ("forget", "test")  # the sets about the people to forget; the others are kept


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return name


def should_fall(objective: str, set_name: str, mode: str | None = None) -> bool:
    """True when knowledge on (set, mode) should fall under `objective` (a drop is success);
    False when it should stay (a drop is damage). mode None: the set as a whole (forget-visual:
    only its image+text part falls, so a set-level figure counts as falling)."""
    check_objective(objective)
    if set_name not in TARGET_SETS:
        return False
    if objective == FORGET_VISUAL:
        return mode != "text_only"
    return True


def objective_of(results: dict) -> str:
    """The objective a results.json was produced under (forget-both when it records none)."""
    return (results.get("manifest") or {}).get("objective") or DEFAULT_OBJECTIVE


def describe(objective: str, sets=("forget", "test", "retain", "celebrity"), modes=("image_text", "text_only")) -> str:
    """What `objective` asks, in words, from should_fall: 'forget, test fall; retain, celebrity stay'
    (forget-both), 'forget, test fall in image_text, stay in text_only; retain, celebrity stay'
    (forget-visual)."""
    groups: dict[tuple, list[str]] = {}
    for s in sets:
        groups.setdefault(tuple(should_fall(objective, s, m) for m in modes), []).append(s)
    parts = []
    for falls, names in groups.items():
        down = [m for m, f in zip(modes, falls) if f]
        up = [m for m, f in zip(modes, falls) if not f]
        what = "fall" if not up else "stay" if not down else f"fall in {' and '.join(down)}, stay in {' and '.join(up)}"
        parts.append(f"{', '.join(names)} {what}")
    return "; ".join(parts)
