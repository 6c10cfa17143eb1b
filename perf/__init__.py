"""Speed and memory scripts (not tests; the benchmark plugins are in benchmarks/): each prints
one summary line with its figures.

    python perf/eval_throughput.py [--model DIR | --shape llava-7b] ...
    python perf/manu_stats.py      [--model DIR | --shape llava-7b] ...

Shared plumbing (model choice, the LLaVA-1.5-7B-shaped random model, threads, quiet mode,
JSON output) is in `perf/common.py`.
"""
