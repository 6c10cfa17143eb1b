"""The embedded tiny LLaVA's shape and curriculum: TinyConfig, Recipe and the model builders.

Why a model of our own: the demo and the tests need a vision-language model that *knows* the
benchmark's people in both modalities (so unlearning has something to remove) and runs on a
laptop CPU. A pretrained LLaVA is gigabytes and knows none of our fictitious profiles, so the
project ships a ~5M-parameter `LlavaForConditionalGeneration` (CLIP vision tower + Llama
language model) with a word-level tokenizer (tiny_data).

What the recipe rests on (the probes of docs/tiny-model.md):
- Names are split into their words (first- and last-name tokens shared across people), so
  recalling a person's fact is a conjunction the MLPs compute: that is where MANU prunes.
  With one token per full name the facts sat in the name embeddings and MANU had nothing to cut.
- A curriculum: bare facts first, then letter binding (a short synthetic drill, then a
  knowledge-free drill in the official multiple-choice format), then every official task
  prompt (multiple choice with fresh distractors that need the recalled fact, the
  benchmark's own items, generation, cloze; zero-shot and with the official in-context
  examples) while facts and drills continue. Letter binding forms at a peak learning rate of
  1e-3 and not at 3e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmunlearn.harness.embedded.tiny_data import (
    BOS,
    EOS,
    IMAGE_SIZE,
    IMAGE_TOKEN,
    PAD,
    PATCH_SIZE,
    TRAIN_SETS,
    build_processor,
    build_tokenizer,
    vocabulary_texts,
)


@dataclass(frozen=True)
class TinyConfig:
    """Sizes and name tokenization of the tiny LLaVA. The language-model width is what makes text
    facts learnable."""

    vision_hidden: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 384
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_mlp: int = 1024
    max_positions: int = 1024  # the official in-context prompts reach about 650 tokens
    # Names as their words (first- and last-name tokens shared across people) instead of one
    # token each: recalling a person's facts then needs the MLPs, which MANU prunes.
    split_names: bool = True


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (recorded in training.json). Phase boundaries are fractions of
    `steps`; `mix` gives, per phase and batch, the share of each item kind."""

    steps: int = 4500
    peak_lr: float = 1.2e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    batch_text: int = 64
    batch_image: int = 48
    image_weight: float = 1.0
    facts_until: float = 0.25  # bare facts (and the short drill) only
    binding_until: float = 0.35  # + the official-format letter drill
    examples_share: float = 0.1  # classification / cloze items rendered with official in-context examples
    check_every: int = 250
    check_per_group: int = 32  # classification questions per (set, mode) in the periodic check
    threads: int = 2
    device: str = "cpu"
    # The reference model of the privacy metrics: trained like the main one, without ever seeing
    # the demo's forget split (forget 15), so it shows what a model that never learned them knows.
    leave_out_forget: bool = False
    # Continued training with the skills of tiny_skills: the share of every batch in the "all"
    # phase given to the utility suites' items and to CLEAR's prompts (the rest keeps the mix
    # above, so the facts stay; a batch without such items renormalises over the others).
    utility_share: float = 0.0
    grounding_share: float = 0.0
    clear_share: float = 0.0
    # Peak learning rate of the vision tower and projector (None: peak_lr like the rest).
    vision_lr: float | None = None

    def train_sets(self) -> tuple[str, ...]:
        """The sets whose profiles are trained on."""
        return tuple(s for s in TRAIN_SETS if not (self.leave_out_forget and s == "forget"))

    def mix(self, phase: str, batch: str) -> dict[str, float]:
        """Share of each item kind in the text or image batch of a phase."""
        base = self._mix(phase, batch)
        skills = {"utility": self.utility_share, "grounding": self.grounding_share, "clear": self.clear_share}
        if phase != "all" or not any(skills.values()):
            return base
        rest = 1 - sum(skills.values())
        return {**{k: w * rest for k, w in base.items()}, **{k: w for k, w in skills.items() if w > 0}}

    def _mix(self, phase: str, batch: str) -> dict[str, float]:
        if batch == "text":
            return {
                "facts": {"fact": 0.65, "short_drill": 0.35},
                "binding": {"fact": 0.4, "short_drill": 0.2, "drill": 0.4},
                "all": {
                    "fact": 0.2,
                    "short_drill": 0.05,
                    "drill": 0.05,
                    "mc": 0.25,
                    "mc_bench": 0.1,
                    "generation": 0.15,
                    "cloze": 0.2,
                },
            }[phase]
        return {
            "facts": {"fact": 1.0},
            "binding": {"fact": 1.0},
            "all": {"fact": 0.25, "mc": 0.3, "mc_bench": 0.1, "generation": 0.15, "cloze": 0.2},
        }[phase]


# Continued training of a committed model with the skills of tiny_skills (`train-tiny --skills-from`):
# every official prompt from the first step (the facts and letters are already there); the language
# model at a low peak (5e-4 moved the committed model's letter answers to one letter), the vision
# side at 1e-3; of each image batch, 30% on the utility suites' questions, 25% on reading the
# picture (what is where, described: at 200 steps without it the model answered every suite from
# the text alone) and 10% on CLEAR's prompts.
SKILLS_RECIPE = Recipe(
    steps=1000,
    peak_lr=3e-4,
    vision_lr=1e-3,
    facts_until=0.0,
    binding_until=0.0,
    utility_share=0.3,
    grounding_share=0.25,
    clear_share=0.1,
    check_every=200,
)

# ----------------------------------------------------------------------------- building


def llava_config(tokenizer, vision: dict, text: dict, **llava):
    """LlavaConfig of a CLIP vision tower (`vision`) and a Llama language model (`text`), untied
    embeddings, special-token ids read from `tokenizer`; `llava` sets the fields that differ
    between the tiny model and the benchmarks' random-weight shapes."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    ids = tokenizer.convert_tokens_to_ids
    text_config = LlamaConfig(
        pad_token_id=ids(PAD), bos_token_id=ids(BOS), eos_token_id=ids(EOS), tie_word_embeddings=False, **text
    )
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=text_config,
        # The stub lists only image_token_index; image_token_id is its attribute_map alias.
        image_token_id=ids(IMAGE_TOKEN),  # type: ignore[call-arg]
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        **llava,
    )


def greedy_decoding(model):
    """Set `model`'s generation config to greedy decoding with its text config's special tokens."""
    text, gen = model.config.text_config, model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = text.pad_token_id, text.bos_token_id, text.eos_token_id
    gen.do_sample = False
    return model


def build_model(tokenizer, config: TinyConfig = TinyConfig(), seed: int = 0):
    """Randomly initialised LlavaForConditionalGeneration sized by `config`."""
    from transformers import LlavaForConditionalGeneration

    vision = dict(
        hidden_size=config.vision_hidden,
        intermediate_size=config.vision_mlp,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=config.vision_hidden,
    )
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_mlp,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_heads,
        max_position_embeddings=config.max_positions,
    )
    torch.manual_seed(seed)
    return greedy_decoding(
        LlavaForConditionalGeneration(llava_config(tokenizer, vision, text, vision_feature_layer=-1))
    )


def build_tiny_llava(bench, config: TinyConfig = TinyConfig(), seed: int = 0):
    """(untrained model, processor) whose vocabulary covers every text of `bench`.

    Every person's name (the rows' `answer` field) is a single token unless `config.split_names`.
    """
    names = [] if config.split_names else [p.vqa_answer for profiles in bench.profiles.values() for p in profiles]
    tokenizer = build_tokenizer(vocabulary_texts(bench), names)
    return build_model(tokenizer, config, seed), build_processor(tokenizer)
