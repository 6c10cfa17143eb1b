"""Can a model learn to bind option letters to option texts? A synthetic drill on CPU.

Multiple choice in the official format ("A: x / B: y / ... Answer with the option's letter")
needs a two-step circuit: each option text must carry its letter (a previous-token head), and
the answer position must find the option matching what the model knows and copy that letter.
The drill isolates the circuit from any knowledge: the prompt lists four random option texts
under A-D, the answer names every option text followed by its letter in shuffled order
("y B x A ..."), and only the letters are scored. Accuracy above what elimination gives
(about 0.46: the last letters follow from the earlier ones) means the binding circuit formed.

    python scripts/option_binding_drill.py [--model DIR] [--steps 1500] [--lr 3e-3]

It trains a copy in memory and saves nothing unless --out is given. Figures it gave on the
embedded tiny LLaVA are in docs/tiny-model.md.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL
from mmunlearn.harness.core.model import Request, load_vlm
from mmunlearn.harness.core.records import LETTERS


def drill_item(values: list[str], rng: random.Random) -> tuple[str, str]:
    """(prompt listing four options, answer naming each option text then its letter)."""
    options = rng.sample(values, len(LETTERS))
    prompt = "\n".join(f"{letter}: {value}" for letter, value in zip(LETTERS, options))
    order = rng.sample(range(len(LETTERS)), len(LETTERS))
    return prompt, " ".join(f"{options[i]} {LETTERS[i]}" for i in order)


def letter_loss(vlm, items: list[tuple[str, str]], letter_ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean NLL and accuracy over the answer's letter tokens only."""
    enc = vlm.encode([Request(text=p) for p, _ in items], [a for _, a in items])
    labels = enc.pop("labels")[:, 1:]
    labels = labels.masked_fill(~torch.isin(labels, letter_ids), -100)
    logits = vlm.model(**enc).logits[:, :-1]
    scored = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[scored], labels[scored])
    accuracy = (logits[scored].argmax(-1) == labels[scored]).float().mean().item()
    return loss, accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="option texts come from its classification items")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--report-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the drilled model here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    bench = load_benchmark(args.bench)
    values = sorted({v for q in bench.questions(tasks="classification") for v in q.options.values()})
    vlm = load_vlm(args.model, device="cpu")
    letter_ids = torch.tensor(vlm.tokenizer.convert_tokens_to_ids(list(LETTERS)))
    opt = torch.optim.AdamW(vlm.model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=max(0.05, 3 / args.steps)
    )
    vlm.model.train()
    start, recent = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        opt.zero_grad(set_to_none=True)
        loss, accuracy = letter_loss(vlm, [drill_item(values, rng) for _ in range(args.batch)], letter_ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vlm.model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [accuracy])[-args.report_every :]
        if step % args.report_every == 0 or step == args.steps:
            print(
                f"step {step:5d}  {time.perf_counter() - start:6.0f} s  letter loss {loss.item():.3f}  "
                f"letter accuracy (last {len(recent)} steps) {sum(recent) / len(recent):.2f}",
                flush=True,
            )
    if args.out:
        vlm.model.eval()
        vlm.save(args.out)


if __name__ == "__main__":
    main()
