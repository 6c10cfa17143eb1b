"""Benchmark scripts (not tests): each prints one summary line with its figures.

    python benchmarks/eval_throughput.py [--model DIR | --shape llava-7b] ...
    python benchmarks/manu_stats.py      [--model DIR | --shape llava-7b] ...

Shared plumbing (model choice, the LLaVA-1.5-7B-shaped random model, threads, quiet mode,
JSON output) is in `benchmarks/common.py`.
"""
