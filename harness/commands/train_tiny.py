"""`mmunlearn train-tiny`: train the embedded tiny LLaVA on a mini-bench (CPU, minutes).

Reproduces harness/assets/tiny-llava: the same bench, seed and recipe give the same model.
A killed run resumes from <out>/train_state.pt when started again with the same arguments.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace

from harness.defaults import DEFAULT_BENCH, DEFAULT_MODEL

NAME = "train-tiny"
HELP = "train the embedded tiny LLaVA on a mini-bench (stage 1: celebrities, stage 2: all profiles)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from harness.tiny_model import Recipe

    default = Recipe()
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="mini-bench folder (default: the embedded one)")
    p.add_argument("--out", default=str(DEFAULT_MODEL), help="output folder (default: the embedded model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=default.steps, help=f"optimiser steps (default {default.steps})")
    p.add_argument("--lr", type=float, default=default.peak_lr, help="OneCycle peak learning rate")
    p.add_argument("--threads", type=int, default=default.threads, help="torch CPU threads")
    p.add_argument("--check-every", type=int, default=default.check_every,
                   help="steps between per-mode accuracy checks")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="questions per (set, task, mode) in the final evaluation (default: all)")
    p.add_argument("--init", default=None,
                   help="continue training this checkpoint instead of building a fresh model")
    p.add_argument("--pretrain-fraction", type=float, default=default.pretrain_fraction,
                   help="share of steps on the celebrity set only")
    p.add_argument("--facts-fraction", type=float, default=default.facts_fraction,
                   help="share of steps on bare question -> answer facts only")
    p.add_argument("--loss-average", choices=("token", "item"), default=default.loss_average,
                   help="average the answer loss per token (as the committed model) or per item")
    p.add_argument("--mc-share", type=float, default=default.mc_share,
                   help="after the facts phase, share of each batch drawn from the benchmark's own multiple-choice items")
    p.add_argument("--split-names", action="store_true",
                   help="tokenize names as their words, so facts must live in the MLPs (what MANU prunes)")
    p.add_argument("--log", default=None, help="also append progress lines to this file")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def run(args: argparse.Namespace) -> int:
    import json

    from harness.bench import load_benchmark
    from harness.errors import ConfigError
    from harness.tiny_model import Recipe, TinyConfig, train_tiny

    if args.steps < 1:
        raise ConfigError(f"--steps must be positive, got {args.steps}")
    if args.split_names and args.init:
        raise ConfigError("--split-names builds a new tokenizer; it cannot continue an --init checkpoint")
    recipe = replace(Recipe(), steps=args.steps, peak_lr=args.lr, threads=args.threads,
                     check_every=args.check_every, pretrain_fraction=args.pretrain_fraction,
                     facts_fraction=args.facts_fraction, mc_share=args.mc_share,
                     loss_average=args.loss_average)
    bench = load_benchmark(args.bench)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(line + "\n")

    log(f"train-tiny: bench {bench.source}, out {args.out}, seed {args.seed}, recipe "
        + json.dumps({f.name: getattr(recipe, f.name) for f in fields(recipe)}))
    record = train_tiny(bench, args.out, seed=args.seed, recipe=recipe, config=TinyConfig(split_names=args.split_names),
                        evaluate_limit=args.eval_limit, progress=not args.no_progress, log=log, init=args.init)
    log("final: " + json.dumps(record["final"]))
    log(f"saved to {args.out} ({record['train_seconds']} s training)")
    return 0
