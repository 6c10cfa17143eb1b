"""Yes/no benchmarks: MME (perception and cognition scores) and POPE (accuracy, precision, recall,
F1, yes-ratio), with the answer parsers of the scripts whose numbers they reproduce.

Parsers (`parse_yes_no`), each returning "yes", "no" or None (unreadable, counted wrong):
- "prefix": MME's official `calculation.py` and FIUBench's `eval/eval_pope.py` (`parse_pred_ans`):
  the reply lower-cased; "yes"/"no" as is; otherwise "yes" if its first 4 characters contain "yes",
  else "no" if they contain "no". So "Yes." and "yes, there is" are yes, and so is "not sure" no
  (as there). Surrounding whitespace is stripped first (FIUBench strips spaces and newlines).
- "exact": lmms-eval's POPE (`pope_process_results`): the reply lower-cased and stripped must be
  exactly "yes" or "no". "Yes." is unreadable, hence wrong.
- "lmms_mme": lmms-eval's MME (`parse_pred_ans`, "from Otter"): lower-cased, stripped, every "."
  removed; "yes"/"no"; a single "y"/"n"; otherwise the 4-character prefix rule above.

MME (`lmms-lab/MME`: `question_id` names the image, two questions per image): per category,
acc = correct questions / questions, acc+ = images with both questions right / images, score =
(acc + acc+) x 100; perception and cognition are sums of their categories' scores (the official
lists below). A sum is None unless all of its categories were scored: a partial sum is not MME's.

POPE (`lmms-lab/POPE`, `category` = adversarial / popular / random): "yes" is the positive class.
An unreadable reply is wrong for accuracy and, as in lmms-eval and MME's tool, is neither a
positive nor a negative prediction: it enters no precision/recall count (reported as `unreadable`).
`yes_ratio` is the share of replies that are "yes" (the POPE paper's, so a model that answers yes
to everything shows 1.0); lmms-eval 0.7.3's `pope_yes_ratio` is the share of *ground-truth* "yes"
(0.5 on every balanced POPE split, whatever the model says), reported here as `gt_yes_ratio`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

PARSE_MODES = ("prefix", "exact", "lmms_mme")

# The official MME categories (MME's calculation.py and lmms-eval's tasks/mme/utils.py
# `eval_type_dict`, which agree).
MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
POPE_SPLITS = ("adversarial", "popular", "random")


def _prefix_rule(text: str) -> str | None:
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return None


def parse_yes_no(text: str | None, mode: str = "prefix") -> str | None:
    """The reading of a model's reply: "yes", "no" or None (unreadable); the module doc has the modes."""
    if mode not in PARSE_MODES:
        raise ValueError(f"unknown yes/no parse mode {mode!r}; known: {', '.join(PARSE_MODES)}")
    if text is None:
        return None
    if mode == "exact":
        text = text.lower().strip()
        return text if text in ("yes", "no") else None
    if mode == "lmms_mme":
        text = text.lower().strip().replace(".", "")
        if len(text) == 1:
            return {"y": "yes", "n": "no"}.get(text)
        return _prefix_rule(text)
    return _prefix_rule(text.strip().lower())


def _gold(answer: str) -> str:
    gold = answer.strip().lower().rstrip(".")
    if gold not in ("yes", "no"):
        raise ValueError(f"a yes/no benchmark's answer must be yes or no, got {answer!r}")
    return gold


# -- MME --------------------------------------------------------------------------------------
def mme_scores(rows: Iterable[Mapping[str, Any] | Sequence[Any]], mode: str = "prefix") -> dict[str, Any]:
    """MME scores from rows (category, image id, gold answer, model reply), as mappings with keys
    `category`, `question_id` (the image, as in `lmms-lab/MME`), `answer`, `response`, or as tuples
    in that order.

    Returns {"categories": {name: {"acc", "acc_plus", "score", "questions", "images", "unreadable"}},
    "perception", "cognition", "total" (perception + cognition, None unless both are),
    "missing" (official categories without rows), "unofficial" (categories in neither list: scored
    on their own, in no sum)}. acc and acc_plus are fractions; score is (acc + acc_plus) x 100.
    Every image must have exactly two questions (MME's pairs; lmms-eval asserts the same)."""
    per_image: dict[str, dict[Any, list[bool]]] = defaultdict(lambda: defaultdict(list))
    unreadable: dict[str, int] = defaultdict(int)
    for row in rows:
        if isinstance(row, Mapping):
            category, image, answer, response = row["category"], row["question_id"], row["answer"], row["response"]
        else:
            category, image, answer, response = row
        pred = parse_yes_no(response, mode)
        unreadable[category] += pred is None
        per_image[category][image].append(pred == _gold(answer))
    categories: dict[str, dict[str, Any]] = {}
    for category, images in per_image.items():
        bad = [image for image, marks in images.items() if len(marks) != 2]
        if bad:
            raise ValueError(
                f"MME scores pairs: every image has two questions; in {category!r}, image(s) "
                f"{bad[:5]} have {[len(images[b]) for b in bad[:5]]}"
            )
        questions = 2 * len(images)
        acc = sum(sum(marks) for marks in images.values()) / questions
        acc_plus = sum(all(marks) for marks in images.values()) / len(images)
        categories[category] = {
            "acc": acc,
            "acc_plus": acc_plus,
            "score": (acc + acc_plus) * 100,
            "questions": questions,
            "images": len(images),
            "unreadable": unreadable[category],
        }

    def total(names: Sequence[str]) -> float | None:
        if any(name not in categories for name in names):
            return None
        return sum(categories[name]["score"] for name in names)

    perception, cognition = total(MME_PERCEPTION), total(MME_COGNITION)
    official = set(MME_PERCEPTION) | set(MME_COGNITION)
    return {
        "categories": categories,
        "perception": perception,
        "cognition": cognition,
        "total": None if perception is None or cognition is None else perception + cognition,
        "missing": [name for name in MME_PERCEPTION + MME_COGNITION if name not in categories],
        "unofficial": sorted(name for name in categories if name not in official),
    }


# -- POPE -------------------------------------------------------------------------------------
def pope_metrics(golds: Sequence[str], responses: Sequence[str | None], mode: str = "prefix") -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and yes-ratio of one POPE split, "yes" the positive class.

    tp: gold yes, said yes; fp: gold no, said yes; tn: gold no, said no; fn: gold yes, said no;
    unreadable replies are in none of these and are wrong for accuracy. precision = tp / (tp + fp),
    recall = tp / (tp + fn), each 0.0 when its denominator is 0 (lmms-eval's convention), F1 their
    harmonic mean (0.0 when both are 0). yes_ratio = replies read as yes / all replies;
    gt_yes_ratio = gold yes / all questions (what lmms-eval reports as pope_yes_ratio). With no
    question every rate is None."""
    if len(golds) != len(responses):
        raise ValueError(f"{len(golds)} answers but {len(responses)} replies")
    tp = fp = tn = fn = unread = gold_yes = 0
    for answer, response in zip(golds, responses):
        gold, pred = _gold(answer), parse_yes_no(response, mode)
        gold_yes += gold == "yes"
        if pred is None:
            unread += 1
        elif pred == "yes":
            tp += gold == "yes"
            fp += gold == "no"
        else:
            tn += gold == "no"
            fn += gold == "yes"
    n = len(golds)
    counts = {"n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "unreadable": unread}
    if n == 0:
        rates = dict.fromkeys(("accuracy", "precision", "recall", "f1", "yes_ratio", "gt_yes_ratio"))
        return {**rates, **counts}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n,
        "gt_yes_ratio": gold_yes / n,
        **counts,
    }


def pope_scores(rows: Iterable[Mapping[str, Any] | Sequence[Any]], mode: str = "prefix") -> dict[str, dict[str, Any]]:
    """`pope_metrics` per split from rows (split, gold answer, model reply), as mappings with keys
    `category` (the split's name in `lmms-lab/POPE`), `answer`, `response`, or as tuples in that
    order. Returns {split: metrics} for the splits present."""
    by_split: dict[str, tuple[list[str], list[str | None]]] = {}
    for row in rows:
        if isinstance(row, Mapping):
            split, answer, response = row["category"], row["answer"], row["response"]
        else:
            split, answer, response = row
        golds, responses = by_split.setdefault(split, ([], []))
        golds.append(answer)
        responses.append(response)
    return {split: pope_metrics(golds, responses, mode) for split, (golds, responses) in by_split.items()}
