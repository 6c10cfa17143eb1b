"""Several seeds of one run: a run folder per seed (`OUT/seed-<s>/`, each an ordinary run that
resumes on its own) and an aggregate results.json in `OUT/` that says how far the seeds spread.

Why: a training method's figures move more between seeds than between questions on the embedded
default (NPO's forget image+text cloze 0.31 / 0.69 / 0.65 over seeds 0 / 1 / 2), so one seed's
number says little about the method. The aggregate keeps results.json's layout, so the
leaderboard, `check` and `--like` read it as a run:

* metrics: the mean over seeds of every figure (None where any seed has none: a figure that was
  not available in one seed is not averaged over the others);
* intervals: per figure, the interval of that mean counting seed and question sampling
  (`statistics.summarize_seeds`: se^2 = sd^2 / n + mean of the seeds' bootstrap se^2, Welch-
  Satterthwaite t);
* seeds: the seeds, their folders, why the run depends on its seed, and per figure the mean, the
  between-seed sd, every seed's value and a new seed's 95% prediction interval.

A run whose output cannot depend on its seed (a method that declares itself seed-independent,
evaluated without anything drawn by the seed) runs once, and the aggregate says so.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from mmunlearn.harness.core.contracts import get_method
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.results import (
    RESULTS_FILE,
    RUN_FILE,
    SCHEMA_VERSION,
    atomic_write_json,
    interval_of,
    is_count_metric,
    iter_metrics,
    load_results,
    modality_gap,
)
from mmunlearn.harness.core.bench import benchmark_of
from mmunlearn.harness.core.examples import profile_count
from mmunlearn.harness.core.statistics import summarize_seeds

SEEDS_KEY = "seeds"


def seed_folder(seed: int) -> str:
    return f"seed-{seed}"


def seed_dependence(cfg) -> list[str]:
    """Why a run configured as `cfg` gives other figures under another seed (empty: it does not).
    The method says whether its output depends on the seed (`Method.seed_dependent`, checked for
    every method by tests/test_method_conformance.py); the evaluation draws with the seed whatever
    the method: in-context example profiles, the transformed test image per question, relearn folds."""
    cfg.validate()  # the benchmark's sets, stages and protocol, resolved
    plugin = benchmark_of(cfg.bench, cfg.benchmark)
    reasons = []
    if get_method(cfg.method).seed_dependent:
        reasons.append(f"method {cfg.method} draws with the seed (training order, initialisation)")
    if cfg.shots not in (0, "0") and any(profile_count(cfg.shots, t, None) for t in plugin.question_types()):
        reasons.append("in-context example profiles are drawn with the seed (--shots)")
    if cfg.test_images == "random" and "test" in cfg.sets:
        reasons.append("each test-set question's transformed image is drawn with the seed (--test-images random)")
    drawn = plugin.protocol(cfg.protocol).seed_draws
    if drawn:
        reasons.append(f"{drawn} is drawn with the seed ({cfg.benchmark} protocol {cfg.protocol})")
    if "relearn" in cfg.stages:
        reasons.append("the relearning attack's folds are drawn with the seed (--stages relearn)")
    return reasons


def run_seeds(
    cfg, seeds: list[int], out: str | os.PathLike, run: Callable[[Any, Path], dict], progress: bool = True
) -> dict:
    """Run `cfg` once per seed into OUT/seed-<s>/ (each resumable), then write OUT/results.json.
    `run(cfg, folder)` is the runner (harness.app.runner.run_benchmark with its progress flag)."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds needs distinct seeds, got {seeds}")
    out = Path(out)
    if (out / RUN_FILE).exists():
        raise ConfigError(f"{out} holds a single run (run.json): give --seeds runs a folder of their own")
    reasons = seed_dependence(cfg)
    ran = seeds if reasons else seeds[:1]
    for i, seed in enumerate(ran, 1):
        if progress:
            print(f"[mmunlearn] seed {seed} ({i}/{len(ran)}) -> {out / seed_folder(seed)}", flush=True)
        run(replace(cfg, seed=seed), out / seed_folder(seed))
    results = aggregate([out / seed_folder(s) for s in ran], requested=seeds, reasons=reasons)
    atomic_write_json(out / RESULTS_FILE, results)
    return results


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _put(tree: dict, set_name: str, key: str, mode: str, metric: str, value) -> None:
    tree.setdefault(set_name, {}).setdefault(key, {}).setdefault(mode, {})[metric] = value


def aggregate(run_dirs: list[Path], requested: list[int], reasons: list[str]) -> dict:
    """The aggregate results of the seed runs in `run_dirs` (see the module docstring)."""
    runs = [load_results(d) for d in run_dirs]
    first = runs[0]
    seeds_run = [r["manifest"].get("config", {}).get("seed") for r in runs]
    metrics: dict = {}
    intervals: dict = {}
    cells: dict = {}
    for set_name, key, mode, metric, value in iter_metrics(first["metrics"], counts=True):
        values = [r["metrics"].get(set_name, {}).get(key, {}).get(mode, {}).get(metric) for r in runs]
        if is_count_metric(metric) or not _numeric(value):
            # Counts and labels are the same in every seed (same questions); where a count
            # differs (judge failures), the seeds' total.
            same = all(v == value for v in values)
            _put(metrics, set_name, key, mode, metric, value if same or not is_count_metric(metric) else sum(values))
            continue
        if not all(_numeric(v) for v in values):
            _put(metrics, set_name, key, mode, metric, None)
            continue
        if len(runs) == 1:
            _put(metrics, set_name, key, mode, metric, value)
            iv = interval_of(first, set_name, key, mode, metric)
            if iv is not None:
                _put(intervals, set_name, key, mode, metric, iv)
            continue
        ivs = [interval_of(r, set_name, key, mode, metric) for r in runs]
        ses = [(iv or {}).get("se") for iv in ivs]
        known = [float(s) for s in ses if isinstance(s, (int, float))]
        summary = summarize_seeds(values, known if len(known) == len(runs) else None)
        _put(metrics, set_name, key, mode, metric, summary.mean)
        _put(intervals, set_name, key, mode, metric, {"value": summary.mean, **_interval_part(summary)})
        _put(cells, set_name, key, mode, metric, summary.to_dict())
    info = {
        "requested": list(requested),
        "seeds": seeds_run,
        "runs": [str(Path(d).name) for d in run_dirs],
        "seed_dependent_because": reasons,
        "ran_once": len(runs) == 1 and len(requested) > 1,
    }
    if info["ran_once"]:
        info["note"] = (
            f"seed-independent: ran once with seed {seeds_run[0]}; seeds {requested[1:]} would give the same figures"
        )
    manifest = dict(first["manifest"])
    manifest[SEEDS_KEY] = info
    return {
        "schema_version": SCHEMA_VERSION,
        "metrics": metrics,
        "modality_gap": modality_gap(metrics),
        "intervals": intervals,
        SEEDS_KEY: {**info, "cells": cells},
        "manifest": manifest,
    }


def _interval_part(summary) -> dict:
    d = summary.to_dict()
    return {"se": d["se"], "lo": d["lo"], "hi": d["hi"], "n_seeds": d["n"], "method": d["method"]}


def seed_summary(results: dict, set_name: str, key: str, mode: str, metric: str) -> dict | None:
    """The per-seed summary of one figure of an aggregate run (mean, sd, values, prediction
    interval), or None for a single run or a figure without one."""
    found = (results.get(SEEDS_KEY) or {}).get("cells", {}).get(set_name, {}).get(key, {}).get(mode, {}).get(metric)
    return found if isinstance(found, dict) else None


def is_aggregate(results: dict) -> bool:
    return isinstance(results.get(SEEDS_KEY), dict)


def seed_runs_of(aggregate_dir: Path) -> list[Path]:
    """The seed folders an aggregate results.json in `aggregate_dir` was made from."""
    results = load_results(aggregate_dir)
    return [aggregate_dir / name for name in (results.get(SEEDS_KEY) or {}).get("runs", [])]
