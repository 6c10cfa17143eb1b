"""MANU's statistics pass: its cost against a bare forward pass, and its memory at two dataset sizes.

MANU (methods/manu.py) streams per-neuron statistics over the forget and retain fact pairs with
forward hooks (`collect_statistics` driving `mmunlearn.harness.core.neurons.ActivationRecorder`, or
`OutputRecorder` for `--variant official`): one forward pass per batch, nothing stored per
sample. This script times that pass and divides it by a bare forward pass (the same loop,
same inputs and batches, same encoding, no hooks); it also gives the ratio for the model calls
alone (batches encoded beforehand). Then it runs the pass on N and 4N samples per bucket and
reports the peak memory of each: on CUDA `torch.cuda.max_memory_allocated`, on CPU the peak
resident set size sampled during the pass plus the peak of Python/NumPy allocations made by
the pass (tracemalloc). Streamed statistics mean the two sizes give the same peak. One line:

    manu_stats model=tiny-llava device=cpu dtype=float32 threads=2 variant=paper batch=4 n=32: statistics 0.61 s, forward 0.55 s, ratio 1.11x (model calls only 1.15x); peak memory n=32 612.3 MiB, n=128 612.4 MiB (x1.00); heap n=32 0.9 MiB, n=128 0.9 MiB

Not a test: nothing here asserts a speed or a size.

    python perf/manu_stats.py [--model DIR | --shape llava-7b [--layers K]]
        [--n 32 --scale 4 --batch 4 --repeat 3 --variant paper] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from perf.common import (  # noqa: E402
    BenchmarkUsageError,
    OtherLoad,
    add_common_arguments,
    environment,
    load_model,
    model_facts,
    run_main,
    setup,
    synchronize,
    timed,
    write_json,
)

MIB = 2**20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="manu_stats", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    w = p.add_argument_group("workload")
    w.add_argument("--n", type=int, default=32, help="fact pairs per (forget|retain, mode) bucket, timed size")
    w.add_argument("--scale", type=int, default=4, help="the second memory measurement uses scale x n pairs")
    w.add_argument("--batch", type=int, default=4, help="batch size (MANU's default: 4, the paper's)")
    w.add_argument("--repeat", type=int, default=3, help="timed repetitions (the fastest of each is kept)")
    w.add_argument(
        "--variant",
        default="paper",
        choices=("paper", "official"),
        help="paper: ActivationRecorder (pooled z per sample); official: OutputRecorder (per token)",
    )
    w.add_argument("--tau", type=float, default=0.1)
    return p


# ----------------------------------------------------------------------------- data and passes


def sized_data(bench, n: int):
    """UnlearnData with exactly n fact pairs per (dataset, mode) bucket: the benchmark's forget
    and retain pairs, repeated in order when a bucket has fewer (the same objects, so the data
    itself costs no extra memory)."""
    from mmunlearn.harness.core.records import MODES
    from mmunlearn.harness.core.contracts import UnlearnData

    full = UnlearnData.from_benchmark(bench)

    def take(pairs):
        if not pairs:
            raise BenchmarkUsageError("the benchmark has an empty forget/retain bucket")
        return [pairs[i % len(pairs)] for i in range(n)]

    return UnlearnData(forget={m: take(full.forget[m]) for m in MODES}, retain={m: take(full.retain[m]) for m in MODES})


def make_recorder(vlm, nmap, variant: str, tau: float):
    from mmunlearn.harness.core.neurons import ActivationRecorder, OutputNeurons, OutputRecorder

    if variant == "official":
        return OutputRecorder(vlm.model, OutputNeurons(vlm.model, nmap), tau)
    return ActivationRecorder(vlm.model, nmap, tau)


def statistics_pass(vlm, nmap, data, batch: int, variant: str, tau: float) -> dict:
    """What Manu.apply runs for its statistics stage (mmunlearn.methods.manu.collect_statistics)."""
    from mmunlearn.methods.manu import collect_statistics

    recorder = make_recorder(vlm, nmap, variant, tau)
    with recorder:
        return collect_statistics(vlm, data, recorder, batch)


def batches(data, batch: int):
    """(bucket, fact pairs) in collect_statistics' order."""
    from mmunlearn.harness.core.seeding import chunks
    from mmunlearn.methods.manu import DATASETS, MODES, bucket

    for dataset in DATASETS:
        for mode in MODES:
            for b in chunks(data.pairs(dataset, [mode]), batch):
                yield bucket(dataset, mode), b


@torch.no_grad()
def bare_pass(vlm, data, batch: int) -> None:
    """collect_statistics' loop without any hook: encode each batch, call the model."""
    from mmunlearn.harness.core.contracts import encode_pairs, model_inputs

    vlm.model.eval()
    for _, b in batches(data, batch):
        vlm.model(**model_inputs(encode_pairs(vlm, b)))


@torch.no_grad()
def model_calls(vlm, encoded, recorder=None) -> None:
    """The model calls alone over pre-encoded batches, with or without the recorder's hooks."""
    vlm.model.eval()
    for key, enc in encoded:
        if recorder is not None:
            recorder.set_bucket(key)
            recorder.set_token_mask(enc["attention_mask"])
        vlm.model(**enc)


def time_passes(vlm, nmap, data, args) -> dict:
    """Fastest of `repeat` runs of each pass, interleaved so drift hits both alike."""
    from mmunlearn.harness.core.contracts import encode_pairs, model_inputs

    dev = vlm.device
    encoded = [(key, model_inputs(encode_pairs(vlm, b))) for key, b in batches(data, args.batch)]
    warm = sized_data_head(data, args.batch)  # one batch per bucket, untimed
    bare_pass(vlm, warm, args.batch)
    statistics_pass(vlm, nmap, warm, args.batch, args.variant, args.tau)
    best = {
        "statistics": float("inf"),
        "forward": float("inf"),
        "calls_hooked": float("inf"),
        "calls_bare": float("inf"),
    }
    for _ in range(args.repeat):
        runs = {
            "forward": lambda: bare_pass(vlm, data, args.batch),
            "statistics": lambda: statistics_pass(vlm, nmap, data, args.batch, args.variant, args.tau),
            "calls_bare": lambda: model_calls(vlm, encoded),
            "calls_hooked": lambda: _hooked_calls(vlm, nmap, encoded, args),
        }
        for name, fn in runs.items():
            _, seconds = timed(fn, dev)
            best[name] = min(best[name], seconds)
    return best


def _hooked_calls(vlm, nmap, encoded, args) -> None:
    recorder = make_recorder(vlm, nmap, args.variant, args.tau)
    with recorder:
        model_calls(vlm, encoded, recorder)


def sized_data_head(data, batch: int):
    from mmunlearn.harness.core.contracts import UnlearnData

    return UnlearnData(
        forget={m: p[:batch] for m, p in data.forget.items()}, retain={m: p[:batch] for m, p in data.retain.items()}
    )


# ----------------------------------------------------------------------------- memory


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _page_size()
    except (OSError, ValueError, IndexError):
        return None


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident set size while the block runs, sampled every `interval` seconds (Linux
    /proc/self/statm); falls back to getrusage's process-wide high-water mark elsewhere."""

    def __init__(self, interval: float = 0.0005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() or 0)
            time.sleep(self.interval)

    def __enter__(self):
        self.start = _rss_bytes()
        if self.start is not None:
            self.peak = self.start
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.start is None:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            self.start = 0
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        return False


def peak_memory(vlm, fn) -> dict:
    """Peak memory of fn(): CUDA allocator figures on a GPU; RSS and tracemalloc on CPU (two runs,
    so tracemalloc's bookkeeping does not inflate the RSS figure)."""
    dev = vlm.device
    gc.collect()
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        fn()
        synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        return {"kind": "cuda", "peak_bytes": peak, "over_weights_bytes": peak - base}
    with RssSampler() as rss:
        fn()
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, heap = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "kind": "cpu",
        "peak_bytes": rss.peak,
        "rss_start_bytes": rss.start,
        "rss_growth_bytes": rss.peak - rss.start,
        "heap_peak_bytes": heap,
    }


# ----------------------------------------------------------------------------- main


def summary(label, vlm, args, t: dict, mem: dict) -> str:
    n, big = args.n, args.n * args.scale
    m_small, m_big = mem[n], mem[big]
    head = (
        f"manu_stats model={label} device={vlm.device.type} dtype={str(vlm.dtype).replace('torch.', '')} "
        f"threads={torch.get_num_threads()} variant={args.variant} batch={args.batch} n={n}: "
        f"statistics {t['statistics']:.3g} s, forward {t['forward']:.3g} s, "
        f"ratio {t['statistics'] / t['forward']:.2f}x "
        f"(model calls only {t['calls_hooked'] / t['calls_bare']:.2f}x); "
    )
    growth = m_big["peak_bytes"] / m_small["peak_bytes"]
    line = (
        f"peak memory n={n} {m_small['peak_bytes'] / MIB:.1f} MiB, n={big} {m_big['peak_bytes'] / MIB:.1f} MiB "
        f"(x{growth:.2f})"
    )
    if m_small["kind"] == "cuda":
        line += (
            f"; over weights n={n} {m_small['over_weights_bytes'] / MIB:.1f} MiB, "
            f"n={big} {m_big['over_weights_bytes'] / MIB:.1f} MiB"
        )
    else:
        line += (
            f"; growth over the start n={n} {m_small['rss_growth_bytes'] / MIB:.1f} MiB, "
            f"n={big} {m_big['rss_growth_bytes'] / MIB:.1f} MiB"
            f"; heap n={n} {m_small['heap_peak_bytes'] / MIB:.2f} MiB, n={big} {m_big['heap_peak_bytes'] / MIB:.2f} MiB"
        )
    return head + line


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if min(args.n, args.scale, args.batch, args.repeat) < 1:
        raise BenchmarkUsageError("--n, --scale, --batch and --repeat must be >= 1")
    if args.n < args.batch:
        raise BenchmarkUsageError(
            f"--n ({args.n}) must be at least --batch ({args.batch}): with fewer samples per "
            "bucket the two sizes would run different batch shapes, and memory would follow "
            "the batch, not the dataset"
        )
    from mmunlearn.harness.core.bench import load_benchmark
    from mmunlearn.harness.core.neurons import neuron_map

    bench = load_benchmark(args.bench, forget=args.forget)
    vlm, label = load_model(args, bench)
    nmap = neuron_map(vlm.model)
    data = sized_data(bench, args.n)
    sizes = sorted({args.n, args.n * args.scale})
    mem = {}
    with OtherLoad() as others:
        times = time_passes(vlm, nmap, data, args)
        for size in sizes:
            d = sized_data(bench, size)
            mem[size] = peak_memory(vlm, lambda: statistics_pass(vlm, nmap, d, args.batch, args.variant, args.tau))
    line = summary(label, vlm, args, times, mem)
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "manu_stats",
                "summary": line,
                "model": label,
                **model_facts(vlm),
                "environment": environment(vlm.device),
                "variant": args.variant,
                "batch": args.batch,
                "n": args.n,
                "scale": args.scale,
                "repeat": args.repeat,
                "neurons": nmap.total,
                "seconds": times,
                "ratio": times["statistics"] / times["forward"],
                "ratio_model_calls": times["calls_hooked"] / times["calls_bare"],
                "memory": {str(k): v for k, v in mem.items()},
                "memory_growth": mem[sizes[-1]]["peak_bytes"] / mem[sizes[0]]["peak_bytes"],
                "other_processes_cores": others.cores,
            },
        )
    others.warn(vlm.device)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
