"""What a run records about itself: the fingerprint that names its configuration (every setting
its figures depend on: change one and it is a different run, resumed from nothing) and the
manifest of results.json (what ran, on what, from which commit, and how long)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from mmunlearn.harness.app import defaults
from mmunlearn.harness.core.bench import DEFAULT_BENCHMARK
from mmunlearn.harness.core.examples import plan_examples
from mmunlearn.harness.core.objectives import DEFAULT_OBJECTIVE
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.results import to_jsonable
from mmunlearn.harness.core.stages import get_stage

PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "peft",
    "accelerate",
    "rouge-score",
    "openai",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "mmunlearn",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def display_source(source: str | os.PathLike) -> str:
    """How a model/benchmark source is recorded: the embedded assets by name (so committed
    results do not carry this machine's paths), local paths absolute, hub ids verbatim."""
    p = Path(source)
    if p.exists():
        p = p.resolve()
        try:
            return f"embedded:{p.relative_to(defaults.ASSETS.resolve()).as_posix()}"
        except ValueError:
            return str(p)
    return str(source)


def resolve_source(recorded: str) -> str:
    """Inverse of display_source: an `embedded:` name back to the asset's path."""
    prefix = "embedded:"
    return str(defaults.ASSETS / recorded[len(prefix) :]) if recorded.startswith(prefix) else recorded


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, code modified?) of the checkout this package runs from (or `root`); (None, None)
    outside git. Modified means a tracked file outside results/ differs from HEAD: regenerating the
    committed results (`make reference`, `make robustness`) rewrites results/ and is not a code change."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(config), sort_keys=True).encode()).hexdigest()


def judge_model_of(judge) -> str | None:
    """The model that actually judges (None: no judge, or one without a key or endpoint)."""
    return judge.model if judge is not None and judge.available else None


def run_fingerprint(cfg, *, weights_hash: str, bench, params, tasks: dict, judge_model, base_source) -> dict:
    """The run's configuration as its figures depend on it (the configuration hash is taken over
    it): the model by source and weights hash, the benchmark by fingerprint, every evaluation and
    method setting, and the stages' own settings."""
    fingerprint = {
        "model": display_source(cfg.model),
        "weights_hash": weights_hash,
        "bench": display_source(cfg.bench),
        "bench_fingerprint": bench.fingerprint,
        "forget": cfg.forget,
        "method": cfg.method,
        "params": to_jsonable(params),
        "seed": cfg.seed,
        "shots": cfg.shots,
        "test_images": cfg.test_images,
        "dtype": cfg.dtype,
        "sets": list(cfg.sets),
        "tasks": list(tasks),
        "limit": cfg.limit,
        "judge": judge_model,
        "judge_protocol": cfg.judge_protocol if judge_model else None,
        "max_new_tokens": cfg.max_new_tokens,
        "scorers": list(cfg.scorers),
    }
    # A benchmark other than MLLMU-Bench, its options and a non-default objective only when they
    # differ from the defaults, so runs made before benchmarks were plugins keep their hash.
    plugin = getattr(bench, "plugin", None)
    if plugin is not None and (bench.name != DEFAULT_BENCHMARK or bench.protocol != plugin.protocol(None).name):
        fingerprint["benchmark"] = bench.name
        fingerprint["protocol"] = bench.protocol
    if plugin is not None and bench.options != dataclasses.asdict(plugin.Options()):
        fingerprint["bench_options"] = dict(bench.options)
    if getattr(bench, "suites", None):  # utility suites: by source and fingerprint
        seen = {id(s): s for s in bench.suites.values()}.values()
        fingerprint["utility"] = {
            s.name: {
                "source": display_source(s.source),
                "fingerprint": s.fingerprint,
                "protocol": s.protocol,
                "max_new_tokens": cfg.max_new_tokens
                if cfg.max_new_tokens_given
                else s.plugin.protocol(s.protocol).max_new_tokens,
            }
            for s in seen
        }
        if cfg.utility_limit is not None:
            fingerprint["utility_limit"] = cfg.utility_limit
    if cfg.objective != DEFAULT_OBJECTIVE:  # it decides --select best's model
        fingerprint["objective"] = cfg.objective
    if base_source:  # only when given, so runs without one keep their configuration hash
        fingerprint["base_model"] = display_source(base_source)
    if cfg.name:
        fingerprint["name"] = cfg.name
    if cfg.stages:
        fingerprint["stages"] = list(cfg.stages)
        for name in cfg.stages:
            fingerprint.update(to_jsonable(get_stage(name).fingerprint(cfg, display_source)))
    return fingerprint


def build_manifest(
    cfg, out, fingerprint, *, base, method_info, vlm, bench, tasks, judge, stage_records, timer, started, run_stats
) -> dict:
    """results.json's manifest: what ran (configuration, model and its provenance, method and its
    report, benchmark, examples, stages), on what (packages, platform, commit) and how long."""
    judge_model = judge_model_of(judge)
    commit, dirty = git_commit()
    return {
        "run_id": out.name,
        "config_hash": config_hash(fingerprint),
        "config": fingerprint,
        "model": {
            "name": cfg.name,
            "source": fingerprint["model"],
            "base_model": {"source": fingerprint["base_model"], **base} if base else None,
            "weights_hash": fingerprint["weights_hash"],
            "unlearned_weights_hash": method_info.get("weights_hash"),
            "arch": getattr(vlm, "arch", None),
            "device": str(getattr(vlm, "device", "")) or None,
            "dtype": str(getattr(vlm, "dtype", "")) or None,
            "trust_remote_code": cfg.trust_remote_code,
            "allow_pickle_weights": cfg.allow_pickle_weights,
        },
        "benchmark": {
            "name": getattr(bench, "name", DEFAULT_BENCHMARK),
            "protocol": getattr(bench, "protocol", None),
            "options": to_jsonable(getattr(bench, "options", {})),
            "drawn": to_jsonable(getattr(bench, "notes", {})),
            "source": fingerprint["bench"],
            "fingerprint": bench.fingerprint,
            "forget": cfg.forget,
        },
        "objective": cfg.objective,
        "utility": fingerprint.get("utility"),
        "forget": cfg.forget,
        "method": {
            "name": cfg.method,
            "params": fingerprint["params"],
            "report": method_info.get("report"),
            "weights_changed": method_info.get("weights_changed"),
            "system_prompt": method_info.get("system_prompt"),
            "checkpoint": method_info.get("checkpoint"),
        },
        "seed": cfg.seed,
        "shots": cfg.shots,
        "examples": {
            s: {
                t: plan_examples(bench, s, task.question_type(), cfg.shots, cfg.seed, vlm.arch).record()
                for t, task in tasks.items()
                if bench.cells(s, task.question_type())  # only the (set, task) cells the run scores
            }
            for s in cfg.sets
        }
        if cfg.shots != 0
        else None,
        "test_images": cfg.test_images,
        "sets": list(cfg.sets),
        "tasks": list(tasks),
        "modes": list(MODES),
        "limit": cfg.limit,
        "scorers": list(cfg.scorers),
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": run_stats["batch_size"],
        "distributed": run_stats["distributed"],
        "prompt_style": getattr(vlm, "prompt_style", None),
        "judge": judge_model,
        "judge_protocol": cfg.judge_protocol if judge_model else None,
        "judge_requested": cfg.judge,
        "judge_stats": to_jsonable(getattr(judge, "stats", None)) if judge_model else None,
        "stages": to_jsonable(stage_records),
        "resume": run_stats["resume"],
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "wall_time_s": dict(timer.stages),
        "started": started,
        "finished": now_iso(),
    }
