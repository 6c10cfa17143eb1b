"""Tiny random-weight vision-language models for tests, one per supported architecture.

`make_tiny_vlm(arch, tmp_dir)` builds a model (hidden sizes 16-64, 1-2 layers) plus its
processor (word-level tokenizer with the architecture's special tokens, PIL image processor,
chat template where the architecture uses one) and saves both with `save_pretrained`, so tests
load them back through `mmunlearn.harness.core.model.load_vlm` exactly like a real checkpoint. Nothing touches
the network. `ARCHES` lists the architectures (config.model_type values) it can build.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmunlearn.harness.embedded.tiny_recipe import TinyConfig

# The embedded tiny LLaVA's architecture at test size (the committed model is larger).
SMALL_TINY_LLAVA = TinyConfig(
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_mlp=64,
    text_hidden=64,
    text_layers=2,
    text_heads=2,
    text_mlp=128,
)

ARCHES = ("llava", "llava_next", "idefics2", "idefics3", "qwen2_vl", "qwen2_5_vl")

WORDS = (
    "the a an of is what who where when which this that person name job born city in at and or to "
    "from with for on his her their please answer question following based your trained knowledge "
    "one sentence accurately english option letter given choices directly only provide correct "
    "should replace blank without repeating you are helpful assistant protects privacy do not reveal "
    "any personal information about private individuals such as birthplace occupation education "
    "family if asks say cannot help it doctor teacher painter paris london rome alice bob carol "
    "dave red green blue big small old young user system image picture photo describe"
).split()
PUNCT = list(":.,?!'\"()[]*_-\n")


def _tokenizer(specials: list[str], bos: str | None, eos: str, pad: str, chat_template: str | None = None):
    """Word-level fast tokenizer: every special token is atomic, words split on whitespace/punctuation."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in ["<unk>", *specials, *WORDS, *[w.upper() for w in WORDS], *PUNCT, *"ABCDEFGHIJ", *"0123456789"]:
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    kwargs = dict(unk_token="<unk>", eos_token=eos, pad_token=pad)
    if bos:
        kwargs["bos_token"] = bos
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in (bos, eos, pad)]})
    if chat_template:
        fast.chat_template = chat_template
    return fast


def _text_config(model_type: str, vocab_size: int, pad_id: int, eos_id: int, bos_id: int | None, **extra):
    base = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        tie_word_embeddings=False,
    )
    base.update(extra)
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **base)


def _clip_vision(image_size=32, patch_size=8):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )


def _seed_init(model, seed: int):
    """Deterministic, non-degenerate random weights (std large enough that greedy outputs vary)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "norm" in name or "layernorm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


LLAVA_SPECIALS = ["<s>", "</s>", "<pad>", "<image>"]


def _llava(out: Path, seed: int):
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _tokenizer(LLAVA_SPECIALS, "<s>", "</s>", "<pad>")
    ids = tok.convert_tokens_to_ids
    text = _text_config("llama", len(tok), ids("<pad>"), ids("</s>"), ids("<s>"))
    cfg = LlavaConfig(
        vision_config=_clip_vision(),
        text_config=text,
        image_token_id=ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    model = _seed_init(LlavaForConditionalGeneration(cfg), seed)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, proc


def _llava_next(out: Path, seed: int):
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = _tokenizer(LLAVA_SPECIALS, "<s>", "</s>", "<pad>")
    ids = tok.convert_tokens_to_ids
    text = _text_config("llama", len(tok), ids("<pad>"), ids("</s>"), ids("<s>"))
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    cfg = LlavaNextConfig(
        vision_config=_clip_vision(),
        text_config=text,
        image_token_id=ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_grid_pinpoints=pinpoints,
    )
    model = _seed_init(LlavaNextForConditionalGeneration(cfg), seed)
    ip = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
    )
    proc = LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, proc


IDEFICS2_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _idefics_vision():
    return dict(
        hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )


def _idefics2(out: Path, seed: int):
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessorPil,
        Idefics2Processor,
    )

    specials = ["<s>", "</s>", "<unk>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    tok = _tokenizer(specials[:2] + specials[3:], "<s>", "</s>", "<unk>", IDEFICS2_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    text = _text_config("mistral", len(tok), ids("<unk>"), ids("</s>"), ids("<s>"), sliding_window=None)
    cfg = Idefics2Config(
        vision_config=_idefics_vision(),
        text_config=text,
        perceiver_config=dict(
            resampler_n_latents=4,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=8,
            num_key_value_heads=1,
            hidden_act="silu",
            hidden_size=32,
            rms_norm_eps=1e-6,
        ),
        image_token_id=ids("<image>"),
        tie_word_embeddings=False,
    )
    model = _seed_init(Idefics2ForConditionalGeneration(cfg), seed)
    ip = Idefics2ImageProcessorPil(do_image_splitting=False, size={"shortest_edge": 16, "longest_edge": 32})
    proc = Idefics2Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS2_TEMPLATE)
    return model, proc


IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _idefics3(out: Path, seed: int):
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    specials = [
        "<|im_start|>",
        "<|endoftext|>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
        "<pad>",
    ]
    tok = _tokenizer(specials, "<|im_start|>", "<end_of_utterance>", "<pad>", IDEFICS3_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    text = _text_config("llama", len(tok), ids("<pad>"), ids("<end_of_utterance>"), ids("<|im_start|>"))
    cfg = Idefics3Config(
        vision_config=_idefics_vision(),
        text_config=text,
        scale_factor=2,
        image_token_id=ids("<image>"),
        tie_word_embeddings=False,
    )
    model = _seed_init(Idefics3ForConditionalGeneration(cfg), seed)
    ip = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE)
    return model, proc


QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen(out: Path, seed: int, v25: bool):
    from transformers import Qwen2VLImageProcessorPil

    tok = _tokenizer(QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>", QWEN_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        pad_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    common = dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    if v25:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=40,
            num_heads=4,
            out_hidden_size=32,
            patch_size=4,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=16,
            fullatt_block_indexes=[1],
        )
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=32,
            mlp_ratio=2,
            num_heads=4,
            patch_size=4,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        cfg = Qwen2VLConfig(text_config=text, vision_config=vision, **common)
        model = Qwen2VLForConditionalGeneration(cfg)
    model = _seed_init(model, seed)
    ip = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=32 * 32, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    return model, (ip, tok)


BUILDERS = {
    "llava": _llava,
    "llava_next": _llava_next,
    "idefics2": _idefics2,
    "idefics3": _idefics3,
    "qwen2_vl": lambda out, seed: _qwen(out, seed, v25=False),
    "qwen2_5_vl": lambda out, seed: _qwen(out, seed, v25=True),
}


def build_tiny_vlm(arch: str, seed: int = 0):
    """In-memory (model, processor). For Qwen the "processor" is (image_processor, tokenizer):
    Qwen2VLProcessor needs torchvision, which this environment does not have."""
    if arch not in BUILDERS:
        raise KeyError(f"no tiny builder for {arch!r}; have {sorted(BUILDERS)}")
    torch.manual_seed(seed)
    return BUILDERS[arch](Path("."), seed)


def make_tiny_vlm(arch: str, tmp_dir, seed: int = 0) -> Path:
    """Build the tiny `arch` model and save it (HF layout) under tmp_dir/arch; returns that path."""
    out = Path(tmp_dir) / arch
    model, proc = build_tiny_vlm(arch, seed)
    model.save_pretrained(out)
    if isinstance(proc, tuple):  # image processor + tokenizer saved separately (see build_tiny_vlm)
        for part in proc:
            part.save_pretrained(out)
        (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    else:
        proc.save_pretrained(out)
    return out


def tiny_images(n: int, size: int = 32, seed: int = 0):
    """n distinct RGB PIL images (random colour blocks) of a size every tiny processor accepts."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    imgs = []
    for _ in range(n):
        arr = (torch.rand(size // 8, size // 8, 3, generator=g) * 255).to(torch.uint8)
        arr = arr.repeat_interleave(8, 0).repeat_interleave(8, 1)
        imgs.append(Image.fromarray(arr.numpy(), "RGB"))
    return imgs


def tiny_unlearn_data(forget_names, retain_names, seed=0, text_answer_shift=0):
    """UnlearnData about a few people: one image_text and one text_only job fact each.

    `text_answer_shift` rotates the text-only answers, so a person's two modes can disagree
    (useful to see modality-specific statistics).
    """
    import io

    from mmunlearn.harness.core.records import FactPair
    from mmunlearn.harness.core.contracts import UnlearnData

    jobs = ["doctor", "teacher", "painter"]
    images = []
    for img in tiny_images(len(forget_names) + len(retain_names), seed=seed):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        images.append(buf.getvalue())

    def pairs(ds, names, imgs):
        return {
            "image_text": [
                FactPair(f"{ds}{i}", "image_text", "what is the job of this person ?", jobs[i % 3], img)
                for i, img in enumerate(imgs)
            ],
            "text_only": [
                FactPair(f"{ds}{i}", "text_only", f"what is the job of {n} ?", jobs[(i + text_answer_shift) % 3])
                for i, n in enumerate(names)
            ],
        }

    n = len(forget_names)
    return UnlearnData(forget=pairs("f", forget_names, images[:n]), retain=pairs("r", retain_names, images[n:]))
