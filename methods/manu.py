"""MANU: Modality-Aware Neuron Unlearning, the reference method ("Modality-Aware Neuron Pruning
for Unlearning in Multimodal Large Language Models", ACL 2025, arXiv:2502.15910).

A *neuron* is one intermediate unit of an MLP block (the input of `down_proj` / `fc2`) in every
layer of the language model and the vision tower (mmunlearn.harness.core.neurons.NeuronMap).

Stage 1, important neuron selection. For the forget set D_f and the retain set D_r, each in a
multimodal (image + question + answer) and a text-only format, stream per neuron and per
(dataset, mode) bucket the count n, sum|z|, sum z, sum z^2 and the count of |z| > tau, where z(d)
is the neuron's activation averaged over the sample's non-padding tokens (vision: its patches).
No per-sample activation is ever stored. With m = multimodal and t = text-only::

    Zbar = sum|z| / n                  I_abs  = |Zbar_m - Zbar_t| / (Zbar_m + Zbar_t + eps)
    N    = #(|z| > tau) / n            I_freq = |N_m - N_t| / (N_m + N_t + eps)
    Var  = sum z^2 / n - (sum z / n)^2 I_var  = sqrt(Var_m + Var_t)
    Q    = sum z^2 / n                 I_rms  = sqrt(|Q_m - Q_t| / (Q_m + Q_t + eps))
    I(D, n) = sum over the enabled functions      (`importance`)

Stage 2, selective pruning::

    S_n = I(D_f, n) / (I(D_r, n) + eps)            (`score`)

and the top alpha of neurons by S_n are pruned (`select_top`, then mmunlearn.harness.core.neurons.prune_units,
which zeroes the neuron's column of down/fc2 and its rows of gate/up/fc1, so its contribution
vanishes exactly). The pool the top alpha is taken from is configurable: all neurons ("global"),
each tower separately ("tower", so the language model cannot crowd out the vision tower or vice
versa; the authors' code, the default of variant="official") or each layer ("layer"). The paper
takes the top alpha of all neurons: "global" is the default of the paper variant.

Choices the paper leaves open, made here:
* N is a *fraction* of samples (the paper writes a count); the two formats of a dataset have
  different numbers of samples, and a count would score that difference, not the neuron.
* tau = 0.1, the only published value (the authors' code). Since z(d) is a mean over tokens it
  is smaller than single-token activations; `save_stats` writes everything needed to choose tau
  for a new model from the data (n_active/n per neuron).
* eps = 1e-8 (the paper's "small constant").
* Means over zero samples are defined as 0. Vision-tower neurons never see text-only samples
  (n_t = 0), so Zbar_t = N_t = Var_t = Q_t = 0 and for every vision neuron that is active on the
  data I_abs -> 1, I_rms -> 1, I_freq = 1 if it ever exceeds tau (else 0) and I_var = sqrt(Var_m):
  in the paper variant vision neurons are ranked essentially by the ratio of their forget and
  retain activation spread. `variant="official"` scores them as the authors' code did.

variant="official" reproduces the authors' released code, which differs from the paper:
* it hooks the *outputs* of gate_proj, up_proj and down_proj (language) and fc1, fc2 (vision),
  each output unit a separate neuron (so down_proj/fc2 neurons are hidden-size units);
* statistics are per token, not per sample: mean |a|, fraction of tokens with |a| > tau,
  standard deviation and root mean square of the activations;
* one score per neuron: sum_k w_k (F_k / (R_k + 1e-5) - 1), F = forget statistic, R = retain
  statistic, weights abs 2, freq 0, var 2, rms 2 (eps defaults to 1e-5 here);
* vision neurons are scored on multimodal passes only, language neurons on text-only passes only
  (no multimodal-vs-text comparison at all);
* top-k per modality (pool="tower");
* pruning zeroes the selected output rows (weight row and bias entry) of those projections.
Its hard-coded layer names meant that only the last three layers of each tower could be pruned;
that is a bug and is not reproduced: here every layer is hooked and eligible. We also leave
padding tokens out of the statistics so results do not depend on the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast

import numpy as np

from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.contracts import (
    Method,
    MethodParams,
    MethodResult,
    UnlearnData,
    encode_pairs,
    model_inputs,
    new_report,
    register_method,
    stage,
)
from mmunlearn.harness.core.neurons import (
    STAT_KEYS,
    ActivationRecorder,
    NeuronMap,
    OutputNeurons,
    OutputRecorder,
    neuron_map,
    prune_output_rows,
    prune_units,
)
from mmunlearn.harness.core.results import atomic_file
from mmunlearn.harness.core.seeding import chunks, seed_everything

DATASETS = ("forget", "retain")
FUNCTIONS: tuple[Literal["abs", "freq", "var", "rms"], ...] = ("abs", "freq", "var", "rms")
PAPER_EPS = 1e-8
OFFICIAL_EPS = 1e-5
OFFICIAL_WEIGHTS = {"abs": 2.0, "freq": 0.0, "var": 2.0, "rms": 2.0}


def bucket(dataset: str, mode: str) -> str:
    return f"{dataset}_{mode}"


# ----------------------------------------------------------------------------- per-mode statistics


def _per_sample(stats: dict, key: str) -> np.ndarray:
    """stats[key] / n, defined as 0 where n = 0 (vision neurons on text-only data)."""
    n = np.asarray(stats["n"], dtype=np.float64)
    out = np.zeros_like(n)
    np.divide(np.asarray(stats[key], dtype=np.float64), n, out=out, where=n > 0)
    return out


def mean_abs(stats: dict) -> np.ndarray:
    """Zbar = sum|z| / n."""
    return _per_sample(stats, "sum_abs")


def active_fraction(stats: dict) -> np.ndarray:
    """N = #{d : |z(d)| > tau} / n."""
    return _per_sample(stats, "n_active")


def variance(stats: dict) -> np.ndarray:
    """Var = sum z^2 / n - (sum z / n)^2 (clipped at 0 against rounding)."""
    return np.maximum(_per_sample(stats, "sum_sq") - _per_sample(stats, "sum") ** 2, 0.0)


def mean_square(stats: dict) -> np.ndarray:
    """Q = sum z^2 / n."""
    return _per_sample(stats, "sum_sq")


# ----------------------------------------------------------------------------- importance functions


def importance_abs(stats_m: dict, stats_t: dict, eps: float) -> np.ndarray:
    """I_abs = |Zbar_m - Zbar_t| / (Zbar_m + Zbar_t + eps): modality preference in magnitude."""
    zm, zt = mean_abs(stats_m), mean_abs(stats_t)
    return np.abs(zm - zt) / (zm + zt + eps)


def importance_freq(stats_m: dict, stats_t: dict, eps: float) -> np.ndarray:
    """I_freq = |N_m - N_t| / (N_m + N_t + eps): modality preference in how often it fires."""
    nm, nt = active_fraction(stats_m), active_fraction(stats_t)
    return np.abs(nm - nt) / (nm + nt + eps)


def importance_var(stats_m: dict, stats_t: dict, eps: float) -> np.ndarray:
    """I_var = sqrt(Var_m + Var_t): how much information (spread) the neuron carries."""
    return np.sqrt(variance(stats_m) + variance(stats_t))


def importance_rms(stats_m: dict, stats_t: dict, eps: float) -> np.ndarray:
    """I_rms = sqrt(|Q_m - Q_t| / (Q_m + Q_t + eps)): modality preference in mean square."""
    qm, qt = mean_square(stats_m), mean_square(stats_t)
    return np.sqrt(np.abs(qm - qt) / (qm + qt + eps))


IMPORTANCE = {"abs": importance_abs, "freq": importance_freq, "var": importance_var, "rms": importance_rms}


def importance(stats_m: dict, stats_t: dict, functions=FUNCTIONS, eps: float = PAPER_EPS) -> np.ndarray:
    """I(D, n) = sum of the enabled importance functions (the paper's ablation switches them off)."""
    if not functions:
        raise ValueError("importance needs at least one importance function")
    # An array: the sum of at least one array (not the empty sum 0).
    return cast(np.ndarray, sum(IMPORTANCE[name](stats_m, stats_t, eps) for name in functions))


def score(importance_forget: np.ndarray, importance_retain: np.ndarray, eps: float = PAPER_EPS) -> np.ndarray:
    """S_n = I(D_f, n) / (I(D_r, n) + eps): important for the forget set, not for the retain set."""
    return importance_forget / (importance_retain + eps)


def paper_scores(stats: dict[str, dict], functions=FUNCTIONS, eps: float = PAPER_EPS) -> np.ndarray:
    """S_n for every neuron from the four buckets' statistics."""
    i_forget = importance(stats["forget_image_text"], stats["forget_text_only"], functions, eps)
    i_retain = importance(stats["retain_image_text"], stats["retain_text_only"], functions, eps)
    return score(i_forget, i_retain, eps)


# ----------------------------------------------------------------------------- the authors' code


def official_statistics(stats: dict) -> dict[str, np.ndarray]:
    """Per-token statistics of the authors' code: mean |a|, active fraction, std, rms."""
    return {
        "abs": mean_abs(stats),
        "freq": active_fraction(stats),
        "var": np.sqrt(variance(stats)),
        "rms": np.sqrt(mean_square(stats)),
    }


def official_scores(stats: dict[str, dict], tower: np.ndarray, functions=FUNCTIONS, eps: float = OFFICIAL_EPS):
    """sum_k w_k (F_k / (R_k + eps) - 1); vision on multimodal passes, language on text-only ones."""
    vision = np.asarray(tower) == "vision"
    out = np.zeros(len(tower), dtype=np.float64)
    for mask, mode in ((vision, "image_text"), (~vision, "text_only")):
        f = official_statistics(stats[bucket("forget", mode)])
        r = official_statistics(stats[bucket("retain", mode)])
        total = sum(OFFICIAL_WEIGHTS[k] * (f[k] / (r[k] + eps) - 1.0) for k in functions)
        out[mask] = np.asarray(total)[mask]
    return out


# ----------------------------------------------------------------------------- selection


class NeuronIndex(NamedTuple):
    """Which tower and layer each scored neuron belongs to (a NeuronMap, or arrays from a .npz)."""

    tower: np.ndarray
    layer: np.ndarray
    unit: np.ndarray


def pool_groups(nmap, pool: str) -> list[np.ndarray]:
    """Index arrays of the neurons competing with each other for the top alpha."""
    tower, layer = np.asarray(nmap.tower), np.asarray(nmap.layer)
    if pool == "global":
        return [np.arange(len(tower))]
    if pool == "tower":
        keys = list(tower)
    elif pool == "layer":
        keys = [f"{t}.{l}" for t, l in zip(tower, layer)]
    else:
        raise ValueError(f"unknown pool {pool!r}")
    key_array = np.asarray(keys)
    return [np.flatnonzero(key_array == k) for k in dict.fromkeys(key_array)]


def top_count(alpha: float, size: int) -> int:
    """round(alpha * size): the number of neurons that is alpha of a pool."""
    return min(size, int(math.floor(alpha * size + 0.5)))


def select_top(scores: np.ndarray, nmap, alpha: float, pool: str = "tower") -> np.ndarray:
    """Boolean mask of the top alpha of neurons by score within each pool (ties: lower index)."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = np.zeros(len(scores), dtype=bool)
    for idx in pool_groups(nmap, pool):
        k = top_count(alpha, len(idx))
        if k:
            order = np.argsort(-scores[idx], kind="stable")
            mask[idx[order[:k]]] = True
    return mask


# ----------------------------------------------------------------------------- statistics collection


def collect_statistics(vlm, data: UnlearnData, recorder, batch_size: int) -> dict[str, dict]:
    """Stream the four buckets' statistics through `recorder` (set_bucket / set_token_mask / stats).
    Under a multi-process launch each rank streams its share of the batches and the sums (every
    statistic is a sum) are added up across ranks."""
    import torch
    from mmunlearn.harness.core import distributed
    from mmunlearn.harness.core.progress import progress_bar

    vlm.model.eval()
    with torch.no_grad():
        for dataset in DATASETS:
            for mode in MODES:
                pairs = data.pairs(dataset, [mode])
                recorder.set_bucket(bucket(dataset, mode))
                mine = distributed.shard(chunks(pairs, batch_size))
                for batch in progress_bar(mine, desc=f"MANU statistics {dataset} {mode}", leave=False):
                    enc = encode_pairs(vlm, batch)
                    recorder.set_token_mask(enc["attention_mask"])
                    vlm.model(**model_inputs(enc))
    return {
        bucket(d, m): {s: distributed.all_reduce_sum_numpy(recorder.stats[bucket(d, m)][s]) for s in STAT_KEYS}
        for d in DATASETS
        for m in MODES
    }


# ----------------------------------------------------------------------------- statistics file


def save_statistics(
    path, stats: dict[str, dict], index, pruned: np.ndarray, *, tau, eps, alpha, pool, functions, variant, module=None
) -> None:
    """Write `{dataset}_{mode}_{stat}` arrays, tower/layer/unit, pruned and the settings (atomically)."""
    arrays = {f"{b}_{s}": np.asarray(v[s]) for b, v in stats.items() for s in STAT_KEYS}
    arrays.update(
        tower=np.asarray(index.tower).astype(str),
        layer=np.asarray(index.layer),
        unit=np.asarray(index.unit),
        pruned=np.asarray(pruned, dtype=bool),
        tau=np.float64(tau),
        eps=np.float64(eps),
        alpha=np.float64(alpha),
        pool=np.str_(pool),
        functions=np.asarray(functions, dtype=str),
        variant=np.str_(variant),
    )
    if module is not None:
        arrays["module"] = np.asarray(module).astype(str)
    with atomic_file(path) as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **kwds against allow_pickle


def load_statistics(path) -> dict:
    """Read a statistics file back: {"stats": {bucket: {stat: array}}, "index": NeuronIndex, ...settings}."""
    with np.load(path, allow_pickle=False) as z:
        stats = {bucket(d, m): {s: z[f"{bucket(d, m)}_{s}"] for s in STAT_KEYS} for d in DATASETS for m in MODES}
        return {
            "stats": stats,
            "index": NeuronIndex(z["tower"], z["layer"], z["unit"]),
            "pruned": z["pruned"],
            "tau": float(z["tau"]),
            "eps": float(z["eps"]),
            "alpha": float(z["alpha"]),
            "pool": str(z["pool"]),
            "functions": tuple(str(f) for f in z["functions"]),
            "variant": str(z["variant"]),
        }


def selection_from_statistics(path) -> np.ndarray:
    """Recompute the pruning mask from a statistics file alone (to audit or re-tune a run)."""
    saved = load_statistics(path)
    return select_top(
        variant_scores(saved["variant"], saved["stats"], saved["index"], saved["functions"], saved["eps"]),
        saved["index"],
        saved["alpha"],
        saved["pool"],
    )


def variant_scores(variant: str, stats, index, functions, eps) -> np.ndarray:
    if variant == "official":
        return official_scores(stats, index.tower, functions, eps)
    return paper_scores(stats, functions, eps)


# ----------------------------------------------------------------------------- the method


@register_method
class Manu(Method):
    """MANU: prune the neurons most important to the forget set relative to the retain set."""

    name = "manu"
    seed_dependent = False  # training-free: statistics and pruning use no random numbers

    @dataclass
    class Params(MethodParams):
        alpha: float = 0.02  # fraction of neurons pruned per pool
        tau: float = 0.1  # activation threshold of I_freq (authors' code)
        eps: float | None = None  # None: 1e-8 (paper), 1e-5 (official)
        pool: Literal["global", "tower", "layer"] | None = None  # None: the variant's (paper global, official tower)
        functions: tuple[Literal["abs", "freq", "var", "rms"], ...] = FUNCTIONS
        variant: Literal["paper", "official"] = "paper"
        save_stats: str | None = None  # .npz path for the streamed statistics and the mask
        batch_size: int = 4  # the paper's batch size

        def validate(self):
            self.require("alpha", 0.0 <= self.alpha <= 1.0, "a fraction between 0 and 1 (0.02 = 2%)")
            self.require("tau", self.tau >= 0, "a number >= 0")
            self.require("eps", self.eps is None or self.eps > 0, "a number > 0, or none for the variant's default")
            self.require("batch_size", self.batch_size >= 1, "an integer >= 1")
            self.require(
                "functions",
                len(self.functions) > 0 and len(set(self.functions)) == len(self.functions),
                "a non-empty comma-separated subset of abs,freq,var,rms without repeats",
            )
            if self.variant == "official":
                self.require(
                    "functions",
                    any(OFFICIAL_WEIGHTS[f] for f in self.functions),
                    "with variant=official at least one of abs,var,rms (freq has weight 0 there)",
                )

        @property
        def resolved_pool(self) -> str:
            if self.pool is not None:
                return self.pool
            return "tower" if self.variant == "official" else "global"

        @property
        def resolved_eps(self) -> float:
            if self.eps is not None:
                return self.eps
            return OFFICIAL_EPS if self.variant == "official" else PAPER_EPS

    def apply(self, vlm, data: UnlearnData, params: Params, seed: int):
        seed_everything(seed)
        report = new_report(self, params, seed)
        eps = params.resolved_eps
        nmap = neuron_map(vlm.model)
        index: OutputNeurons | NeuronMap
        recorder: OutputRecorder | ActivationRecorder
        if params.variant == "official":
            index = OutputNeurons(vlm.model, nmap)
            recorder = OutputRecorder(vlm.model, index, params.tau)
        else:
            index = nmap
            recorder = ActivationRecorder(vlm.model, nmap, params.tau)
        with stage(report, "statistics"), recorder:
            stats = collect_statistics(vlm, data, recorder, params.batch_size)
        with stage(report, "scores"):
            scores = variant_scores(params.variant, stats, index, params.functions, eps)
            pruned = select_top(scores, index, params.alpha, params.resolved_pool)
        with stage(report, "prune"):
            if params.variant == "official":
                assert isinstance(index, OutputNeurons)  # set above for the official variant
                n_pruned = prune_output_rows(vlm.model, index, pruned)
            else:
                n_pruned = prune_units(vlm.model, nmap, pruned)
        if params.save_stats:
            with stage(report, "save_stats"):
                save_statistics(
                    params.save_stats,
                    stats,
                    index,
                    pruned,
                    tau=params.tau,
                    eps=eps,
                    alpha=params.alpha,
                    pool=params.resolved_pool,
                    functions=params.functions,
                    variant=params.variant,
                    module=index.module_names() if isinstance(index, OutputNeurons) else None,
                )
            report["stats_file"] = str(params.save_stats)
        tower = np.asarray(index.tower)
        layer = np.asarray(index.layer)
        report["samples"] = data.counts()
        report["changed"] = {
            "neurons_pruned": int(n_pruned),
            "neurons_total": int(len(tower)),
            "pruned_by_tower": {str(t): int(pruned[tower == t].sum()) for t in dict.fromkeys(tower.tolist())},
            "pruned_by_layer": {
                f"{t}.{l}": int(pruned[(tower == t) & (layer == l)].sum())
                for t, l in dict.fromkeys(zip(tower.tolist(), layer.tolist()))
            },
            "unit": "output row" if params.variant == "official" else "MLP intermediate unit",
        }
        report["eps"] = eps
        return MethodResult(vlm, report)
