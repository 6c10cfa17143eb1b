"""What the privacy figures cost against one log-likelihood pass over the same questions.

Membership inference reads one teacher-forced forward per (question, ground truth) with the
next-token distribution's mean and standard deviation at each answer position (Min-K%++); the
baseline is the same forward without them (the loglik scorers' pass). The truth ratio reads the
model's greedy answer (its frame) and the four options after it; its baseline is the four
options' pass without a frame (the `loglik_answer` scorer). One line:

    privacy_cost model=tiny-llava device=cpu threads=2 n=64: membership 0.412 s vs loglik 0.398 s (ratio 1.04); truth ratio 1.9 s vs loglik_answer 0.61 s (ratio 3.1)

Not a test: nothing here asserts a speed.

    python perf/privacy_cost.py [--model DIR] [--n 64] [--batch 32] [--repeat 3] [--threads T] [--json PATH]
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
    environment,
    load_model,
    run_main,
    setup,
    timed,
    write_json,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="privacy_cost", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    w = p.add_argument_group("workload")
    w.add_argument("--n", type=int, default=64, help="questions of each kind (forget, both modes)")
    w.add_argument("--batch", type=int, default=32, help="batch size")
    w.add_argument("--repeat", type=int, default=3, help="timed runs (the fastest counts)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if min(args.n, args.batch, args.repeat) < 1:
        raise BenchmarkUsageError("--n, --batch and --repeat must be >= 1")
    from mmunlearn.harness.core.bench import load_benchmark
    from mmunlearn.harness.core.contracts import TaskContext, get_task
    from mmunlearn.harness.core.prompts import Request, user_text
    from mmunlearn.harness.core.records import LETTERS, ImageDecoder

    bench = load_benchmark(args.bench, forget=args.forget)
    vlm, label = load_model(args, bench)
    vlm.model.eval()
    images = ImageDecoder()
    gen = bench.questions(sets=["forget"], tasks=["generation"])[: args.n]
    mc = bench.questions(sets=["forget"], tasks=["classification"])[: args.n]
    gen_reqs = [Request(user_text("generation", q.mode, q.text), images(q.image), task="generation") for q in gen]
    answers = [q.answer for q in gen]
    bare = [Request(q.text, images(q.image)) for q in mc]
    options = [[q.options[x] for x in LETTERS] for q in mc]  # type: ignore[index]
    ctx = TaskContext(batch_size=args.batch)

    def best(fn) -> float:
        fn()  # warm-up
        return min(timed(fn, vlm.device)[1] for _ in range(args.repeat))

    with OtherLoad() as others:
        loglik = best(lambda: vlm.answer_logprobs(gen_reqs, answers, args.batch))
        membership = best(lambda: get_task("membership").evaluate(vlm, gen, ctx))
        answer_pass = best(lambda: vlm.option_logprobs(bare, options, args.batch))
        truth = best(lambda: get_task("truth_ratio").evaluate(vlm, mc, ctx))
    env = environment(vlm.device)
    line = (
        f"privacy_cost model={label} device={vlm.device.type} threads={env['threads']} n={len(gen)}: "
        f"membership {membership:.3f} s vs loglik {loglik:.3f} s (ratio {membership / loglik:.2f}); "
        f"truth ratio {truth:.3f} s vs loglik_answer {answer_pass:.3f} s (ratio {truth / answer_pass:.2f})"
    )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "privacy_cost",
                "summary": line,
                "environment": env,
                "other_processes_cores": others.cores,
                "seconds": {
                    "membership": membership,
                    "loglik": loglik,
                    "truth_ratio": truth,
                    "loglik_answer": answer_pass,
                },
            },
        )
    others.warn(vlm.device)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
