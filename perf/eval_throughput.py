"""Evaluation throughput: batched generation vs the official one-question-at-a-time loop.

The official MLLMU-Bench `eval.py` answers one question per `model.generate` call. The harness
batches (`VLM.generate(reqs, batch_size=B)`: length-sorted, left-padded batches). This script
builds the official requests for N questions of one set/task/mode through the task layer
(`Task.requests`, the same prompts and images a run uses), answers them both ways with the same
`VLM` and the same greedy settings, checks that the answers are identical, and prints one line:

    eval_throughput model=tiny-llava device=cpu dtype=float32 threads=2 task=cloze mode=image_text n=64 batch=16: batched 123.4 q/s, per-question 20.1 q/s, speed-up 6.1x, identical 64/64

Exit status 1 when any answer differs (2: refused configuration). Not a test: nothing here
asserts a speed.

    python perf/eval_throughput.py [--model DIR | --shape llava-7b [--layers K]]
        [--set retain --task cloze --mode image_text --n 64 --batch 16 --max-new-tokens 50]
        [--repeat R] [--threads T] [--json PATH] [--progress]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.common import (  # noqa: E402
    BenchmarkUsageError,
    OtherLoad,
    add_common_arguments,
    add_question_arguments,
    environment,
    load_model,
    model_facts,
    run_main,
    setup,
    timed,
    write_json,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval_throughput", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    w = p.add_argument_group("workload")
    add_question_arguments(w)
    w.add_argument("--n", type=int, default=64, help="questions (spread over profiles as --limit does)")
    w.add_argument("--batch", type=int, default=16, help="batch size of the batched pass")
    w.add_argument("--max-new-tokens", type=int, default=50, help="greedy new tokens (official: 50)")
    w.add_argument("--shots", default="0", help="in-context examples: 0 (default), official, or a number")
    w.add_argument("--repeat", type=int, default=1, help="timed runs of each loop (the fastest counts)")
    return p


def official_requests(vlm, bench, set_: str, task: str, mode: str, n: int, shots="0", seed: int = 0):
    """(questions, requests): the first n questions by qid hash (as `run --limit`) and their
    official requests built by the task layer."""
    from mmunlearn.harness.core.records import ImageDecoder
    from mmunlearn.harness.app.runner import limit_questions
    from mmunlearn.harness.core.contracts import TaskContext, get_task

    questions = limit_questions(bench.questions(sets=[set_], tasks=[task], modes=[mode]), n)
    if not questions:
        raise BenchmarkUsageError(f"the benchmark has no {set_}/{task}/{mode} questions")
    ctx = TaskContext(seed=seed, shots=shots, bench=bench)
    prep = get_task(task).requests(vlm, questions, ctx, ImageDecoder())
    return prep.kept, prep.requests


def measure(vlm, reqs, batch: int, max_new_tokens: int, repeat: int = 1) -> dict:
    """Answer `reqs` batched and one at a time (after an untimed warm-up of each), `repeat` times
    each (the fastest run counts); figures + answers. A question counts as identical when every
    run of both loops gave the same answer."""
    device = vlm.device
    vlm.generate(reqs[:batch], max_new_tokens=max_new_tokens, batch_size=batch)  # warm-up
    vlm.generate(reqs[:1], max_new_tokens=max_new_tokens, batch_size=1)
    t_batched = t_single = float("inf")
    runs = []
    for _ in range(repeat):
        batched, t = timed(lambda: vlm.generate(reqs, max_new_tokens=max_new_tokens, batch_size=batch), device)
        t_batched = min(t_batched, t)
        single, t = timed(
            lambda: [vlm.generate([r], max_new_tokens=max_new_tokens, batch_size=1)[0] for r in reqs], device
        )
        t_single = min(t_single, t)
        runs += [batched, single]
    n = len(reqs)
    same = [len({run[i] for run in runs}) == 1 for i in range(n)]
    return {
        "n": n,
        "batch": batch,
        "max_new_tokens": max_new_tokens,
        "repeat": repeat,
        "batched_seconds": t_batched,
        "per_question_seconds": t_single,
        "batched_qps": n / t_batched,
        "per_question_qps": n / t_single,
        "speedup": t_single / t_batched,
        "identical": sum(same),
        "differing": [{"index": i, "answers": sorted({run[i] for run in runs})} for i, ok in enumerate(same) if not ok][
            :10
        ],
        "answers": runs[0],
    }


def summary(label: str, vlm, args, f: dict) -> str:
    threads = environment(vlm.device)["threads"]
    dtype = str(vlm.dtype).replace("torch.", "")
    return (
        f"eval_throughput model={label} device={vlm.device.type} dtype={dtype} threads={threads} "
        f"task={args.task} mode={args.mode}{'' if str(args.shots) == '0' else ' shots=' + str(args.shots)} "
        f"n={f['n']} batch={f['batch']}: "
        f"batched {f['batched_qps']:.1f} q/s, per-question {f['per_question_qps']:.1f} q/s, "
        f"speed-up {f['speedup']:.1f}x, identical {f['identical']}/{f['n']}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if min(args.n, args.batch, args.max_new_tokens, args.repeat) < 1:
        raise BenchmarkUsageError("--n, --batch, --max-new-tokens and --repeat must be >= 1")
    from mmunlearn.harness.core.bench import load_benchmark

    bench = load_benchmark(args.bench, forget=args.forget)
    vlm, label = load_model(args, bench)
    questions, reqs = official_requests(vlm, bench, args.set, args.task, args.mode, args.n, args.shots, args.seed)
    with OtherLoad() as others:
        figures = measure(vlm, reqs, args.batch, args.max_new_tokens, args.repeat)
    figures["other_processes_cores"] = others.cores
    line = summary(label, vlm, args, figures)
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "eval_throughput",
                "summary": line,
                "model": label,
                **model_facts(vlm),
                "environment": environment(vlm.device),
                "set": args.set,
                "task": args.task,
                "mode": args.mode,
                "shots": args.shots,
                "qids": [q.qid for q in questions],
                **{k: v for k, v in figures.items() if k != "answers"},
            },
        )
    others.warn(vlm.device)
    print(line, flush=True)
    return 0 if figures["identical"] == figures["n"] else 1


if __name__ == "__main__":
    sys.exit(main())
