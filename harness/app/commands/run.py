"""`mmunlearn run`: apply one unlearning method to one model and score it (resumable)."""

from __future__ import annotations

import argparse

from mmunlearn.harness.app import defaults
from mmunlearn.harness.core.bench import TEST_IMAGE_CHOICES
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.examples import OFFICIAL, parse_shots
from mmunlearn.harness.core.judge import DEFAULT_MODEL as DEFAULT_JUDGE
from mmunlearn.harness.core.judge import DEFAULT_PROTOCOL, JUDGE_PROTOCOLS
from mmunlearn.harness.core.objectives import DEFAULT_OBJECTIVE, OBJECTIVES
from mmunlearn.harness.core.results import is_count_metric

NAME = "run"
HELP = "apply an unlearning method to a model and evaluate it on the benchmark (resumes in --out)"


def parse_param_args(items: list[str] | None, flag: str = "--param") -> dict[str, str]:
    """['lr=1e-4', 'epochs=2'] -> {'lr': '1e-4', 'epochs': '2'}; bad items name themselves."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        if key in out:
            raise ConfigError(f"{flag} {key!r} given twice")
        out[key] = value.strip()
    return out


def utility_args(items: list[str] | None) -> tuple[dict[str, str | None], dict[str, str]]:
    """['mmmu@mmmu-lmms-eval', 'mme=/data/mme'] -> ({'mmmu': None, 'mme': '/data/mme'},
    {'mmmu': 'mmmu-lmms-eval'}): SUITE[@PROTOCOL][=PATH]."""
    sources: dict[str, str | None] = {}
    protocols: dict[str, str] = {}
    for item in items or []:
        head, sep, path = item.partition("=")
        name, at, protocol = head.partition("@")
        name = name.strip()
        if not name or (sep and not path.strip()) or (at and not protocol.strip()):
            raise ConfigError(f"--utility {item!r}: expected SUITE, SUITE@PROTOCOL, SUITE=PATH or SUITE@PROTOCOL=PATH")
        if name in sources:
            raise ConfigError(f"--utility {name!r} given twice")
        sources[name] = path.strip() or None
        if at:
            protocols[name] = protocol.strip()
    return sources, protocols


def judge_arg(value: str) -> str | None:
    return None if value.strip().lower() in ("", "none", "off", "null") else value.strip()


def shots_arg(value: str) -> str | int:
    """--shots: "official" or N >= 0; argparse shows our message instead of "invalid parse_shots value"."""
    try:
        return parse_shots(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `run` and `demo`."""
    p.add_argument(
        "--model", default=str(defaults.DEFAULT_MODEL), help="model folder or hub id (default: the embedded tiny LLaVA)"
    )
    p.add_argument(
        "--bench",
        default=str(defaults.DEFAULT_BENCH),
        help="benchmark folder or hub id, in a layout a benchmark plugin reads (default: the embedded mini-bench)",
    )
    p.add_argument(
        "--benchmark",
        default=None,
        help="the benchmark plugin that reads --bench (default: recognised from its layout or hub id; "
        "see `mmunlearn list`)",
    )
    p.add_argument(
        "--protocol", default=None, help="the benchmark's scoring protocol (default: its first; see `mmunlearn list`)"
    )
    p.add_argument(
        "--bench-option",
        action="append",
        metavar="KEY=VALUE",
        help="a benchmark plugin's own option, repeatable (see docs/benchmarks.md)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=DEFAULT_OBJECTIVE,
        help="what should fall: forget-both (default; forget/test in both modes) or forget-visual (forget/test "
        "image+text only; text-only knowledge of the forget people should stay)",
    )
    p.add_argument(
        "--utility",
        nargs="+",
        default=None,
        metavar="SUITE[@PROTOCOL][=PATH]",
        help="general-ability suites scored after the method: mmmu, llava_bench, mme, pope, clear_real_world "
        "(@PROTOCOL: one of the suite's protocols, e.g. mmmu@mmmu-lmms-eval; PATH: a local copy in the real layout; "
        "default: the embedded stand-in beside the embedded benchmark, else the hub)",
    )
    p.add_argument("--utility-limit", type=int, default=None, metavar="N", help="at most N questions per utility cell")
    p.add_argument(
        "--forget",
        type=int,
        default=None,
        help="forget split, the benchmark's own name (MLLMU-Bench 5|10|15, default 5; CLEAR 1|5|10, default 5)",
    )
    p.add_argument("--seed", type=int, default=defaults.DEFAULT_SEED, help="seed for the method and shot sampling")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="B",
        help="profile-bootstrap resamples of each figure's interval, seeded with --seed (default 1000; 0: none)",
    )
    p.add_argument(
        "--shots",
        type=shots_arg,
        default=OFFICIAL,
        help="in-context examples: 'official' (default: the published procedure, seeded) or N example "
        "profiles for classification and cloze; 0 = zero-shot",
    )
    p.add_argument(
        "--test-images",
        choices=TEST_IMAGE_CHOICES,
        default="random",
        help="test-set image per profile and task: random (default, official, seeded), first, or all "
        "(every transformed image scored)",
    )
    p.add_argument("--sets", nargs="+", default=None, help="evaluation sets (default: all the benchmark's)")
    p.add_argument(
        "--tasks", nargs="+", default=[], help="tasks (default: every registered task; see `mmunlearn list`)"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="at most N questions per (set, task, mode), chosen deterministically"
    )
    p.add_argument(
        "--judge",
        type=judge_arg,
        default="auto",
        help=f"factuality judge model, 'auto' (default: the protocol's, {DEFAULT_JUDGE} for official) or "
        "'none'; without an API key factuality is reported as not scored",
    )
    p.add_argument(
        "--judge-protocol",
        choices=tuple(JUDGE_PROTOCOLS),
        default=DEFAULT_PROTOCOL,
        help="official (eval_gpt.py's rubric and parsing, default) or strict (JSON-only, temperature 0)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="questions per batch, also the unit of resume (default: 8 on CPU, what memory allows on GPU)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="greedy decoding length (default: the protocol's, as official: 50 for MLLMU-Bench, 300 for CLEAR)",
    )
    p.add_argument(
        "--scorers",
        nargs="+",
        default=["generate"],
        help="classification scorers: generate (official), loglik, loglik_text",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument(
        "--dtype",
        choices=defaults.DTYPES,
        default="auto",
        help="model dtype (default auto: float16 on GPU, as the official runs; float32 on CPU)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped with the model checkpoint (off by default; recorded in the manifest)",
    )
    p.add_argument(
        "--allow-pickle-weights",
        action="store_true",
        help="load .bin (pickle) weights, which can run code; by default only safetensors load",
    )
    p.add_argument(
        "--keep-model",
        action="store_true",
        help="keep the unlearned model checkpoint in OUT/model/ after the run finishes",
    )
    p.add_argument(
        "--device-map",
        choices=("auto",),
        default=None,
        help="'auto': split the model across the visible GPUs (for models larger than one GPU)",
    )
    p.add_argument(
        "--stages",
        nargs="*",
        default=None,
        help="cross-set measurements after the tasks: privacy, relearn, sweep, ... (default: the protocol's, "
        "privacy for MLLMU-Bench; none: give the flag alone)",
    )
    p.add_argument(
        "--relearn-param",
        action="append",
        metavar="KEY=VALUE",
        help="relearning attack setting (stage relearn), repeatable: folds, steps, lr, batch_size, finetune, control",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="N",
        help="checkpoint sweep: score a fixed subset every N optimiser steps of a training method (adds stage sweep)",
    )
    p.add_argument(
        "--sweep-limit",
        type=int,
        default=12,
        metavar="N",
        help="checkpoint sweep: questions per (set, task, mode) of forget and retain at each checkpoint (default 12)",
    )
    p.add_argument(
        "--select",
        choices=("final", "best"),
        default="final",
        help="the run's output model: the method's last training step (final, default) or the sweep checkpoint "
        "with the best forget/retain trade-off in its worst mode, among those that did not collapse (best; "
        "needs --eval-every)",
    )
    p.add_argument(
        "--holdout",
        default="auto",
        help="profiles no model saw, the non-members of membership inference: a benchmark folder with a "
        "Holdout_Set, a config folder or a parquet file in the benchmark's schema; 'none': without, the "
        "AUCs are 'not available' (default auto: the benchmark's own Holdout_Set, if it has one)",
    )
    p.add_argument(
        "--reference-model",
        default="auto",
        help="a model that never saw the forget profiles, for forget quality and privleak; 'none': without "
        "(default auto: the embedded retain-only tiny LLaVA on the embedded mini-bench)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")


def none_arg(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--method", default="vanilla", help="unlearning method (default vanilla; see `mmunlearn list`)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method parameter, repeatable")
    p.add_argument("--out", required=True, help="run directory (rerun with the same arguments to resume)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run once per seed into OUT/seed-<s>/ (each resumable) and write OUT/results.json with the mean, "
        "the between-seed sd, each seed's value and intervals; a seed-independent run runs once and says so",
    )
    p.add_argument(
        "--name",
        default=None,
        help="leaderboard label for this model (an unlearned checkpoint from elsewhere: --method vanilla scores it as it is)",
    )
    p.add_argument(
        "--like",
        default=None,
        metavar="RUN",
        help="evaluate as that run was evaluated (benchmark, forget split, seed, shots, test images, sets, tasks, "
        "limit, judge, decoding length, scorers, dtype), so the numbers stand beside it; flags given win",
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="the model --model was unlearned from: checked for the same architecture and vocabulary and recorded; "
        "for a PEFT adapter directory, the model it is merged into (default: the base its adapter_config.json names)",
    )


def config_from_args(args: argparse.Namespace, method: str | None = None, params: dict | None = None):
    from mmunlearn.harness.app.runner import RunConfig

    return RunConfig(
        model=args.model,
        bench=args.bench,
        benchmark=args.benchmark,
        protocol=args.protocol,
        bench_options=parse_param_args(args.bench_option, "--bench-option"),
        objective=args.objective,
        utility=utility_args(args.utility)[0],
        utility_protocols=utility_args(args.utility)[1],
        utility_limit=args.utility_limit,
        forget=args.forget,
        method=method if method is not None else args.method,
        params=params if params is not None else parse_param_args(getattr(args, "param", None)),
        seed=args.seed,
        bootstrap=args.bootstrap,
        shots=args.shots,
        test_images=args.test_images,
        sets=tuple(args.sets or ()),
        tasks=tuple(args.tasks),
        limit=args.limit,
        judge=args.judge,
        judge_protocol=args.judge_protocol,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        dtype=args.dtype,
        scorers=tuple(args.scorers),
        keep_model=args.keep_model,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle_weights=args.allow_pickle_weights,
        device_map=args.device_map,
        name=getattr(args, "name", None),
        base_model=getattr(args, "base_model", None),
        stages=None if args.stages is None else tuple(args.stages),
        holdout=none_arg(args.holdout),
        reference_model=none_arg(args.reference_model),
        relearn_params=parse_param_args(getattr(args, "relearn_param", None)),
        eval_every=args.eval_every,
        sweep_limit=args.sweep_limit,
        select=args.select,
    )


# run.json / results.json config key -> the `run` argument it came from (the evaluation settings).
LIKE_KEYS = {
    "bench": "bench",
    "benchmark": "benchmark",
    "protocol": "protocol",
    "bench_options": "bench_option",
    "objective": "objective",
    "utility": "utility",
    "utility_limit": "utility_limit",
    "forget": "forget",
    "seed": "seed",
    "shots": "shots",
    "test_images": "test_images",
    "sets": "sets",
    "tasks": "tasks",
    "limit": "limit",
    "judge": "judge",
    "judge_protocol": "judge_protocol",
    "max_new_tokens": "max_new_tokens",
    "scorers": "scorers",
    "dtype": "dtype",
    "stages": "stages",
    "holdout": "holdout",
    "reference_model": "reference_model",
    "relearn_params": "relearn_param",
    "eval_every": "eval_every",
    "sweep_limit": "sweep_limit",
}


def apply_like(args: argparse.Namespace) -> list[str]:
    """Copy the evaluation settings of the run `args.like` into every argument left at its
    default; returns the arguments taken."""
    from mmunlearn.harness.app.manifest import resolve_source
    from mmunlearn.harness.core.results import load_results

    config = load_results(args.like)["manifest"].get("config") or {}
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    taken = []
    for key, dest in LIKE_KEYS.items():
        if key not in config or getattr(args, dest) != defaults.get_default(dest):
            continue
        value = config[key]
        if key in ("bench", "holdout", "reference_model"):
            value = resolve_source(value) if value is not None else "none"
        elif key == "utility":  # recorded with sources: back to SUITE=PATH arguments
            value = [f"{n}@{v['protocol']}={resolve_source(v['source'])}" for n, v in value.items()]
        elif key in ("relearn_params", "bench_options"):  # recorded parsed: back to KEY=VALUE arguments
            value = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in value.items()]
        elif key == "judge_protocol" and value is None:  # the run had no judge: keep the default protocol
            continue
        setattr(args, dest, value)
        taken.append(dest)
    return taken


def run(args: argparse.Namespace) -> int:
    from mmunlearn.harness.app.runner import run_benchmark

    if getattr(args, "like", None):
        apply_like(args)
    cfg = config_from_args(args)
    if args.seeds:
        from mmunlearn.harness.app.seeds import run_seeds

        results = run_seeds(cfg, args.seeds, args.out, lambda c, d: run_benchmark(c, d, progress=not args.quiet))
    else:
        results = run_benchmark(cfg, args.out, progress=not args.quiet)
    if not args.quiet:
        print(summary_table(results))
    return 0


def summary_table(results: dict) -> str:
    """Compact plain-text view of results.json: one line per set/task, both modes side by side,
    each value with the half-width of its 95% interval where it has one."""
    from mmunlearn.harness.core.results import interval_bounds

    def cell(v, b) -> str:
        if not isinstance(v, (int, float)):
            return "-" if v is None else str(v)
        return f"{v:.3f}" + ("" if b is None else f" ±{(b[1] - b[0]) / 2:.3f}")

    lines = [f"{'set':<10} {'task':<15} {'metric':<22} {'image_text':>14} {'text_only':>14} {'gap':>8}"]
    for set_name, tasks in results["metrics"].items():
        for task, modes in tasks.items():
            metrics = [m for m in modes.get("image_text", {}) if not is_count_metric(m)]
            for metric in metrics:
                a, b = (
                    cell(modes.get(mode, {}).get(metric), interval_bounds(results, set_name, task, mode, metric))
                    for mode in ("image_text", "text_only")
                )
                gap = results.get("modality_gap", {}).get(set_name, {}).get(task, {}).get(metric)
                g = f"{gap:.3f}" if isinstance(gap, (int, float)) else "-" if gap is None else str(gap)
                lines.append(f"{set_name:<10} {task:<15} {metric:<22} {a:>14} {b:>14} {g:>8}")
    return "\n".join(lines)
