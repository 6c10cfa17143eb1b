"""Does a model read the picture on the utility suites? Answer loss with the right picture against
the same questions with the pictures shuffled among them, per suite.

    python scripts/picture_use_probe.py MODEL [MODEL ...] [--seeds 0] [--threads 2]

For each model and each suite of the mini utility suites built with `--seeds` (seed 0: the
committed ones, which are scored; a training seed of tiny_skills: pictures it was taught on),
and for 60 fresh pictures asked what is where (tiny_skills.grounding_items), prints the mean
answer-token NLL of every question rendered as it is trained (tiny_skills), once
with its own picture and once with a picture of another question of the same suite. A model that
answers from the text alone (the prior: "yes", a favourite letter) scores the same on both; the gap
(shuffled - right) is what the picture adds. This is the quickest check of a continued training
(`train-tiny --skills-from`): the greedy accuracies of a run move only once the gap has opened.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from dataclasses import replace


def answer_nll(vlm, samples, images, batch: int = 32) -> float:
    import torch

    from mmunlearn.harness.core.contracts import mean_answer_nll
    from mmunlearn.harness.embedded.tiny_data import to_request

    losses: list[float] = []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        enc = vlm.encode([to_request(s, images) for s in chunk], [s.answer for s in chunk])
        with torch.no_grad():
            losses += mean_answer_nll(vlm.model, enc).tolist()
    return sum(losses) / len(losses)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="mini utility suites to build (0: the scored ones)"
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from mmunlearn.harness.core.model import load_vlm
    from mmunlearn.harness.core.records import ImageDecoder
    from mmunlearn.harness.embedded.tiny_skills import grounding_items, utility_items

    torch.set_num_threads(args.threads)
    by_suite = defaultdict(list)
    rng = random.Random(0)
    for item in utility_items(seeds=tuple(args.seeds), pope_every=1):
        by_suite[item.profile_id.removeprefix("utility/")].append(item.render(rng))
    for item in grounding_items(n_pictures=60, seed="probe"):  # pictures no training drew
        by_suite["grounding"].append(item.render(rng))
    print("| model | suite | questions | NLL right picture | NLL shuffled | gap |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        vlm = load_vlm(model, dtype="float32")
        vlm.model.eval()
        images = ImageDecoder()
        for suite, samples in sorted(by_suite.items()):
            pictures = [s.image for s in samples]
            random.Random(1).shuffle(pictures)
            right = answer_nll(vlm, samples, images)
            shuffled = answer_nll(vlm, [replace(s, image=im) for s, im in zip(samples, pictures)], images)
            print(f"| {model} | {suite} | {len(samples)} | {right:.4f} | {shuffled:.4f} | {shuffled - right:+.4f} |")


if __name__ == "__main__":
    main()
