"""How far batching can speed up reading the prompts: one forward pass over the official requests
at several batch sizes, against a plain matmul of the language model's width.

Classification and cloze answer in one or two tokens, so their cost is this forward pass. When
it already runs near the machine's matmul rate at batch 1, batching cannot win much there
(eval_throughput.py measures the whole generate loop). One line:

    prompt_forward model=tiny-llava device=cpu dtype=float32 threads=2 task=cloze mode=image_text n=64 tokens=47: ms per question batch 1 4.74, batch 16 3.02, batch 64 3.02; language-model linears 135 GFLOP/s at batch 16; matmul 50x256x1024 163 GFLOP/s, 4096^3 221 GFLOP/s

GFLOP/s of the model counts only the language model's linear layers (2 x their weights per
token), a lower bound. Not a test: nothing here asserts a speed.

    python perf/prompt_forward.py [--model DIR] [--set retain --task cloze --mode image_text
        --n 64 --batches 1 16 64 --repeat 3] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from perf.common import (  # noqa: E402
    BenchmarkUsageError,
    OtherLoad,
    add_common_arguments,
    add_question_arguments,
    environment,
    load_model,
    run_main,
    setup,
    timed,
    write_json,
)
from perf.eval_throughput import official_requests  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prompt_forward", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    w = p.add_argument_group("workload")
    add_question_arguments(w)
    w.add_argument("--n", type=int, default=64, help="questions (a multiple of every batch size is best)")
    w.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64], help="batch sizes to time")
    w.add_argument("--repeat", type=int, default=3, help="timed runs per batch size (the fastest counts)")
    return p


def language_linear_weights(model) -> int:
    """Weights of the language model's nn.Linear layers (the LM head included)."""
    lm = model.get_submodule("model.language_model") if hasattr(model, "model") else model.language_model
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in lm.modules() if isinstance(m, torch.nn.Linear)) + head.weight.numel()


def forward_seconds(vlm, reqs, batch: int, repeat: int) -> tuple[float, int]:
    """(fastest seconds for one forward pass over all `reqs` in batches of `batch`, real tokens)."""
    encoded = [vlm.encode(reqs[i : i + batch]) for i in range(0, len(reqs), batch)]
    for enc in encoded:
        enc.pop("labels", None)
    tokens = int(sum(int(enc["attention_mask"].sum()) for enc in encoded))
    with torch.no_grad():
        vlm.model(**encoded[0])  # warm-up
        best = min(timed(lambda: [vlm.model(**enc) for enc in encoded], vlm.device)[1] for _ in range(repeat))
    return best, tokens


def matmul_rate(m: int, k: int, n: int, device, repeat: int = 10) -> float:
    """GFLOP/s of an (m x k) @ (k x n) float32 matmul."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    a @ b
    seconds = min(timed(lambda: a @ b, device)[1] for _ in range(repeat))
    return 2 * m * k * n / seconds / 1e9


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if min(args.n, args.repeat, *args.batches) < 1:
        raise BenchmarkUsageError("--n, --repeat and --batches must be >= 1")
    from mmunlearn.harness.core.bench import load_benchmark

    bench = load_benchmark(args.bench, forget=args.forget)
    vlm, label = load_model(args, bench)
    vlm.model.eval()
    _, reqs = official_requests(vlm, bench, args.set, args.task, args.mode, args.n, "0", args.seed)
    weights = language_linear_weights(vlm.model)
    hidden = vlm.model.config.text_config.hidden_size
    mlp = vlm.model.config.text_config.intermediate_size
    with OtherLoad() as others:
        per_batch = {b: forward_seconds(vlm, reqs, b, args.repeat) for b in args.batches}
        small = matmul_rate(50, hidden, mlp, vlm.device)
        large = matmul_rate(4096, 4096, 4096, vlm.device, repeat=3)
    n = len(reqs)
    mid = args.batches[len(args.batches) // 2]
    seconds, tokens = per_batch[mid]
    model_rate = 2 * weights * tokens / seconds / 1e9
    env = environment(vlm.device)
    line = (
        f"prompt_forward model={label} device={vlm.device.type} dtype={str(vlm.dtype).replace('torch.', '')} "
        f"threads={env['threads']} task={args.task} mode={args.mode} n={n} tokens={tokens // n}: ms per question "
        + ", ".join(f"batch {b} {per_batch[b][0] / n * 1e3:.2f}" for b in args.batches)
        + f"; language-model linears {model_rate:.0f} GFLOP/s at batch {mid}; "
        f"matmul 50x{hidden}x{mlp} {small:.0f} GFLOP/s, 4096^3 {large:.0f} GFLOP/s"
    )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "prompt_forward",
                "summary": line,
                "environment": env,
                "other_processes_cores": others.cores,
                "ms_per_question": {b: per_batch[b][0] / n * 1e3 for b in args.batches},
                "tokens": tokens,
                "model_gflops": model_rate,
                "matmul_gflops": {"small": small, "large": large},
            },
        )
    others.warn(vlm.device)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
