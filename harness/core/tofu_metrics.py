"""TOFU-family metrics shared by TOFU, CLEAR and FIUBench: probability, truth ratio, ROUGE-L
recall, forget quality (KS p-value and 1 - Jensen-Shannon) and model utility, as pure functions
of the per-sample numbers an evaluation pass writes (mean answer-token NLLs and generations).

Written from the upstream aggregation code, not copied from it. References are to
`somvy/multimodal_unlearning` @ bb14c96 (official CLEAR code): `mm/calculate_metrics.py` (MM,
the CLEAR paper's numbers), `mm/eval.py` (what each per-sample number is), `nlp/aggregate_eval_stat.py`
(TOFU text protocol), and `SaFoLab-WISC/FIUBench` @ 8e12cdd `aggregate_eval_stat.py`.

Conventions:

* Every loss is a per-sample *mean answer-token NLL* (``avg_gt_loss``, ``avg_paraphrased_loss``,
  ``average_perturb_loss`` in the upstream output files; mm/eval.py:74-78, 141-144).
* Per-sample results are float64 numpy arrays; aggregates are Python floats.
* Inputs must be finite and non-empty; anything else raises ``ValueError`` naming the argument,
  because upstream would return NaN (np.mean of nothing) or a silently wrong number.
* Truth ratio TR = exp(perturbed - paraphrased) (mm/calculate_metrics.py:116,
  nlp/aggregate_eval_stat.py:78): TR > 1 means the paraphrased true answer is *more* likely than
  the perturbed (false) ones. NB the ``truth_ratio`` field mm/eval.py:80 writes into the output
  files is the reciprocal, exp(paraphrased - mean perturbed); no aggregation reads it, nor does this
  module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as _stats
from scipy.spatial.distance import jensenshannon as _jensenshannon

FloatArray = npt.NDArray[np.float64]
Losses = Sequence[float] | npt.NDArray[Any]
PerturbedLosses = Sequence[Sequence[float]] | npt.NDArray[Any]
Averaging = Literal["per-sample", "pooled"]
AVERAGINGS: tuple[str, ...] = ("per-sample", "pooled")


# ------------------------------------------------------------------------------------ validation
def _vector(values: Losses, name: str) -> FloatArray:
    """A finite, non-empty 1-D float64 copy of ``values``; ValueError naming ``name`` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: no samples to aggregate")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} has a non-finite value at index {int(bad[0])}: {arr[bad[0]]!r}")
    return arr


def _rows(values: PerturbedLosses, name: str, n_samples: int) -> list[FloatArray]:
    """Per-sample perturbed losses as a list of finite, non-empty float64 vectors (ragged allowed)."""
    if isinstance(values, np.ndarray) and values.dtype != object and values.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional (samples x perturbations), got shape {values.shape}")
    rows = list(values)
    if len(rows) != n_samples:
        raise ValueError(f"{name} has {len(rows)} samples but the true-answer losses have {n_samples}")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise ValueError(f"{name}[{i}] must be a list of losses (one per perturbed answer), got {row!r}")
        out.append(_vector(row, f"{name}[{i}]"))
    return out


def _rectangular(rows: list[FloatArray], name: str) -> FloatArray:
    """Stack equal-length rows into a matrix; ValueError where they are ragged."""
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(
            f"{name} is ragged (perturbation counts {lengths}); pooled averaging needs the same number of "
            "perturbed answers for every sample: upstream stacks them with np.array(...).mean() "
            "(mm/calculate_metrics.py:115), which fails on ragged lists, and 'mean of all values' and "
            "'mean of per-sample means' differ there. Use averaging='per-sample' or equalise the lists."
        )
    return np.vstack(rows)


# ----------------------------------------------------------------------------------- probability
def probability(gt_loss: Losses) -> FloatArray:
    """Per-sample probability of the true answer, exp(-mean answer NLL).

    The length-normalised likelihood TOFU reports as "Prob." for generation-style sets; CLEAR uses
    it (averaged) for the caption files, whose names contain "eval_log"
    (mm/calculate_metrics.py:95-97; nlp/aggregate_eval_stat.py:58-60).
    """
    return np.exp(-_vector(gt_loss, "gt_loss"))


def normalized_probability(gt_loss: Losses, perturbed_losses: PerturbedLosses) -> FloatArray:
    """Per-sample p_true / (p_true + sum_j p_perturbed_j), each p = exp(-mean answer NLL).

    The probability mass the model puts on the true answer among the offered answers: CLEAR's
    "Prob." for the face-recognition and real-faces/world files (mm/calculate_metrics.py:98-102,
    nlp/aggregate_eval_stat.py:61-65). Upstream concatenates into a matrix, so it needs equal
    counts; the per-sample sum is well defined for ragged lists too, so those are accepted here.
    Each sample needs at least one perturbed answer.
    """
    true_p = probability(gt_loss)
    rows = _rows(perturbed_losses, "perturbed_losses", len(true_p))
    false_mass = np.array([np.exp(-row).sum() for row in rows], dtype=np.float64)
    return true_p / (true_p + false_mass)


# ----------------------------------------------------------------------------------- truth ratio
def truth_ratios(paraphrased_loss: Losses, perturbed_loss: PerturbedLosses, averaging: Averaging) -> FloatArray:
    """Per-sample truth ratio TR_i = exp(mean perturbed loss - paraphrased_loss_i).

    ``averaging`` picks what "mean perturbed loss" is, the one place the protocols differ:

    * ``"per-sample"``: sample i's own perturbed losses averaged (TOFU text code
      nlp/aggregate_eval_stat.py:75-78 and :26-27 ``.mean(axis=-1)``; FIUBench
      aggregate_eval_stat.py:29,33,77). Ragged lists are fine.
    * ``"pooled"``: ONE scalar, the mean over all samples and all perturbations, shared by every
      sample -- what the official CLEAR multimodal code does (mm/calculate_metrics.py:115
      ``dict_values_to_array(...).mean()`` with no axis; likewise :58 and :61 for forget quality).
      Needs equal counts per sample (see ``_rectangular``).
    """
    if averaging not in AVERAGINGS:
        raise ValueError(f"averaging must be one of {AVERAGINGS}, got {averaging!r}")
    para = _vector(paraphrased_loss, "paraphrased_loss")
    rows = _rows(perturbed_loss, "perturbed_loss", len(para))
    if averaging == "per-sample":
        pert: FloatArray | float = np.array([row.mean() for row in rows], dtype=np.float64)
    else:
        pert = float(_rectangular(rows, "perturbed_loss").mean())
    return np.exp(pert - para)


def truth_ratio_forget(tr: Losses) -> float:
    """mean(min(TR, 1/TR)): 1 when true and false answers are equally likely (forgotten), towards 0
    when the model separates them either way. Used for files whose name contains "forget"
    (mm/calculate_metrics.py:118-119; nlp/aggregate_eval_stat.py:80-81)."""
    arr = _positive(tr, "tr")
    return float(np.mean(np.minimum(arr, 1.0 / arr)))


def truth_ratio_keep(tr: Losses) -> float:
    """mean(max(0, 1 - 1/TR)): towards 1 when the true answer is much likelier than the false ones,
    0 when it is not likelier at all. Used for every other file (retain, real, retain face
    recognition; mm/calculate_metrics.py:120-121; nlp/aggregate_eval_stat.py:82-83)."""
    arr = _positive(tr, "tr")
    return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / arr)))


def _positive(values: Losses, name: str) -> FloatArray:
    arr = _vector(values, name)
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(f"{name} must be positive (a truth ratio is an exp), index {int(bad[0])} is {arr[bad[0]]!r}")
    return arr


# ------------------------------------------------------------------------------------------ ROUGE
@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    # The scorer upstream builds at import (mm/calculate_metrics.py:9, mm/eval.py:20).
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_l_recall(reference: str, prediction: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference``: LCS length / reference length.

    Recall, so a long answer that contains the reference scores 1. Upstream calls
    ``rouge_scorer.score(gt, gen)`` (mm/calculate_metrics.py:38-41, mm/eval.py:39-41), and
    ``RougeScorer.score(target, prediction)`` takes the reference first, as here.
    """
    if not isinstance(reference, str) or not isinstance(prediction, str):
        raise ValueError(
            f"reference and prediction must be strings, got {type(reference).__name__} and {type(prediction).__name__}"
        )
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].recall)


# -------------------------------------------------------------------------------- forget quality
def forget_quality_ks(unlearned_tr: Losses, gold_tr: Losses) -> float:
    """Two-sample Kolmogorov-Smirnov p-value between the unlearned and the gold (retain-only
    trained) model's forget-set truth ratios: 1 = indistinguishable distributions.

    TOFU's forget quality (nlp/aggregate_eval_stat.py:36; FIUBench aggregate_eval_stat.py:38);
    CLEAR reports it too (mm/calculate_metrics.py:70). scipy's default ``method="auto"``, as upstream.
    Lengths may differ (a test of two samples).
    """
    u = _vector(unlearned_tr, "unlearned_tr")
    g = _vector(gold_tr, "gold_tr")
    return float(_stats.ks_2samp(u, g).pvalue)


def forget_quality_js(unlearned_tr: Losses, gold_tr: Losses) -> float:
    """1 - scipy ``jensenshannon(unlearned_tr, gold_tr)``: the CLEAR paper's "Forget Quality".

    Upstream: ``jensenshannon(unlearned_truth_ratio, retained_truth_ratio)`` with no ``base``
    (mm/calculate_metrics.py:71), then ``1 - JS`` when building the tables
    (mm/build_vllm_table.py:103, mm/build_mod_table.py:68). What that computes:

    * scipy divides each vector by its sum and treats the two as probability vectors over the
      *sample positions*, so it compares TR_i with TR'_i index by index (not the distributions of
      TR values, as KS does). Both vectors must hold the same samples in the same order; a
      uniform rescaling of either vector changes nothing.
    * No base means natural logarithms: the distance is sqrt(JS divergence in nats), between 0 and
      sqrt(ln 2) ~ 0.833, so this score lies in [1 - sqrt(ln 2), 1] ~ [0.167, 1], not [0, 1].
    * Unequal lengths: scipy broadcasts, so a length-1 vector against a length-n one returns a
      number silently and other mismatches raise a broadcasting error. Here both raise ValueError.
      Negative or all-zero vectors give NaN in scipy; here ValueError (truth ratios are positive).
    """
    u = _vector(unlearned_tr, "unlearned_tr")
    g = _vector(gold_tr, "gold_tr")
    if u.shape != g.shape:
        raise ValueError(
            f"unlearned_tr has {u.size} samples and gold_tr {g.size}: Jensen-Shannon compares the two truth-ratio "
            "vectors position by position, so both models must be scored on the same samples in the same order"
        )
    for arr, name in ((u, "unlearned_tr"), (g, "gold_tr")):
        if (arr < 0).any() or not (arr > 0).any():
            raise ValueError(f"{name} must be non-negative with a positive sum to be normalised into a distribution")
    return float(1.0 - _jensenshannon(u, g))


# -------------------------------------------------------------------------------- model utility
def model_utility(values: Mapping[str, float | None] | Sequence[float | None]) -> float:
    """Harmonic mean (scipy.stats.hmean) of the given metrics, each in [0, 1] by construction.

    The harmonic mean is dominated by the weakest metric, so one collapsed ability drags utility
    down (mm/calculate_metrics.py:126; nlp/aggregate_eval_stat.py:86-90). A 0 makes the result 0
    (scipy returns 0 for a zero entry). A missing metric (None), NaN or a negative value raises
    ValueError naming it: leaving it out would silently raise utility, and scipy would return NaN.
    Which metrics enter is the caller's choice; ``official_utility_metrics`` reproduces CLEAR's.
    """
    items = list(values.items()) if isinstance(values, Mapping) else [(f"values[{i}]", v) for i, v in enumerate(values)]
    if not items:
        raise ValueError("model_utility needs at least one metric")
    nums = []
    for name, v in items:
        if v is None:
            raise ValueError(f"metric {name} is missing (None); model utility is undefined without it")
        x = float(v)
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"metric {name} must be a finite non-negative number, got {v!r}")
        nums.append(x)
    return float(_stats.hmean(np.asarray(nums, dtype=np.float64)))


def official_utility_metrics(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    """The entries of ``metrics`` that CLEAR's Model Utility averages: every key without the
    substring "Forget" (case-sensitive, mm/calculate_metrics.py:126), e.g. "ROUGE Retain" or
    "Truth Ratio Real World" in, "Prob. Forget FaceRec" out. Pass the result to ``model_utility``."""
    return {k: v for k, v in metrics.items() if "Forget" not in k}


# ------------------------------------------------------------------------- one output file, as upstream
def file_kind(filename: str) -> tuple[bool, bool]:
    """(caption, forget) for an upstream output file name, by the substring tests upstream uses:
    caption = "eval_log" in name (mm/calculate_metrics.py:95), forget = "forget" in name (:118).
    E.g. eval_log_forget.json -> (True, True), eval_forget_facerec.json -> (False, True)."""
    return ("eval_log" in filename, "forget" in filename)


@dataclass(frozen=True)
class FileMetrics:
    """The per-file figures of mm/calculate_metrics.py:92-123 (``truth_ratios`` are per sample)."""

    probability: float
    truth_ratio: float
    truth_ratios: tuple[float, ...]
    rouge_l_recall: float | None = None


def official_file_metrics(
    gt_loss: Losses,
    paraphrased_loss: Losses,
    perturbed_losses: PerturbedLosses,
    *,
    caption: bool,
    forget: bool,
    averaging: Averaging = "pooled",
    rouge_pairs: Sequence[tuple[str, str]] | None = None,
) -> FileMetrics:
    """Aggregate one evaluation file the way mm/calculate_metrics.py:92-123 does.

    * ``caption`` (file name contains "eval_log": the retain and forget caption files): Prob. is
      mean(exp(-gt_loss)); otherwise (face recognition, real faces/world) it is the mean of
      ``normalized_probability`` over ``perturbed_losses``.
    * ``forget`` (name contains "forget"): truth ratio mean(min(TR, 1/TR)); else mean(max(0, 1 - 1/TR)).
    * ``averaging`` defaults to the official CLEAR "pooled" perturbed loss; "per-sample" gives the
      TOFU/FIUBench figure. ``perturbed_losses`` feeds both Prob. (non-caption files) and TR.
    * ``rouge_pairs``: optional (reference, prediction) pairs; their mean ROUGE-L recall is the
      file's "ROUGE" (:106-111). ``file_kind`` maps upstream file names to the two booleans.
    """
    gt = _vector(gt_loss, "gt_loss")
    para = _vector(paraphrased_loss, "paraphrased_loss")
    if len(para) != len(gt):
        raise ValueError(f"paraphrased_loss has {len(para)} samples but gt_loss has {len(gt)}")
    prob = probability(gt) if caption else normalized_probability(gt, perturbed_losses)
    tr = truth_ratios(para, perturbed_losses, averaging)
    tr_value = truth_ratio_forget(tr) if forget else truth_ratio_keep(tr)
    rouge: float | None = None
    if rouge_pairs is not None:
        pairs = list(rouge_pairs)
        if not pairs:
            raise ValueError("rouge_pairs is empty: give None to skip ROUGE")
        rouge = float(np.mean([rouge_l_recall(ref, pred) for ref, pred in pairs]))
    return FileMetrics(
        probability=float(np.mean(prob)),
        truth_ratio=tr_value,
        truth_ratios=tuple(float(x) for x in tr),
        rouge_l_recall=rouge,
    )
