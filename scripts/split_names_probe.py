"""Train a text-only probe of the tiny LLaVA whose names are split into words.

With every full name one token, a fact can sit in the name's embedding and MANU (which prunes
MLP neurons) finds nothing to remove. Splitting names into first- and last-name tokens shared
across people makes recalling a fact a conjunction the MLPs must compute. This trains such a
model on the text-only bare facts and cloze items only (no images: fast enough for a CPU
session) and saves it, so `scripts/fact_locus.py --model OUT` and
`mmunlearn run --model OUT --method manu` can be pointed at it.

    python scripts/split_names_probe.py --out runs/split-names-probe [--steps 1200] [--lr 3e-3]

Figures it gave are in docs/tiny-model.md.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from tqdm.auto import tqdm

from mmunlearn.harness.embedded import tiny_data
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH
from mmunlearn.harness.core.model import wrap_vlm
from mmunlearn.harness.core.prompts import BLANK
from mmunlearn.harness.core.seeding import seed_everything
from mmunlearn.harness.embedded.tiny_recipe import TinyConfig, build_tiny_llava


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", default=str(DEFAULT_BENCH))
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    seed_everything(args.seed)
    bench = load_benchmark(args.bench)
    model, processor = build_tiny_llava(bench, TinyConfig(split_names=True), args.seed)
    vlm = wrap_vlm(model, processor, source=args.out)
    rng = random.Random(args.seed)
    items = [
        i
        for i in tiny_data.training_items(bench, tiny_data.FINETUNE_SETS)
        if i.kind == "text" and (i.bare or BLANK in i.render(random.Random(0))[0])
    ]
    images = tiny_data._Images()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=max(0.1, 3 / args.steps)
    )
    model.train()
    start = time.perf_counter()
    for _ in (bar := tqdm(range(args.steps), desc="split-names probe")):
        opt.zero_grad(set_to_none=True)
        rendered = [(None, *rng.choice(items).render(rng)) for _ in range(args.batch)]
        enc = vlm.encode(
            tiny_data._requests([(im, text) for im, text, _ in rendered], images), [a for *_, a in rendered]
        )
        loss = model(**enc).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    vlm.save(args.out)
    print(f"saved to {args.out} after {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
