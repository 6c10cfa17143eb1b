"""mmunlearn.harness.core.model: loading, prompt styles, batched inference == one-at-a-time, encode labels."""

from __future__ import annotations

import json

import pytest
import torch

from mmunlearn.harness.core.errors import ConfigError, ModelLoadError
from mmunlearn.harness.core.model import SUPPORTED_ARCHITECTURES, Request, load_vlm, wrap_vlm
from tests.tiny_vlms import ARCHES, build_tiny_vlm, make_tiny_vlm, tiny_images

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> directory of a saved tiny model (built once per module, on demand)."""
    root = tmp_path_factory.mktemp("tiny")
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = make_tiny_vlm(arch, root)
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def loaded(saved):
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = load_vlm(saved(arch))
        return cache[arch]

    return get


def mixed_requests():
    """Mixed modes, different prompt lengths, images of different aspect ratios (padding of
    crops / patches / packed patch counts differs between a batch and a single request)."""
    wide, tall = tiny_images(2, size=64, seed=5)
    imgs = [tiny_images(1, seed=1)[0], wide.crop((0, 0, 64, 32)), tall.crop((0, 0, 32, 64))]
    return [
        Request("what is the job of this person ?", imgs[0]),
        Request("who is alice ?"),
        Request("what city is bob born in ? please answer the question in one sentence", imgs[1]),
        Request("name"),
        Request("red", imgs[2]),
        Request("where was the painter carol born ? answer in english"),
    ]


# ---- loading -------------------------------------------------------------------------------


def test_table_covers_every_tiny_arch_and_names_real_classes():
    import transformers

    for arch in ARCHES:
        assert arch in SUPPORTED_ARCHITECTURES
    for spec in SUPPORTED_ARCHITECTURES.values():
        assert hasattr(transformers, spec.model_class), spec.model_class


@pytest.mark.parametrize("arch", ARCHES)
def test_load_detects_arch_from_config(saved, arch):
    vlm = load_vlm(saved(arch))
    assert vlm.arch == arch
    assert vlm.dtype == torch.float32 and vlm.device.type == "cpu"
    assert vlm.prompt_style == ("official" if arch.startswith("llava") or arch == "idefics2" else "chat-template")
    assert not vlm.model.training


def test_arch_is_detected_from_config_not_directory_name(saved, tmp_path):
    import shutil

    odd = tmp_path / "qwen2-vl-looking-name"
    shutil.copytree(saved("llava"), odd)
    assert load_vlm(odd).arch == "llava"


def test_missing_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError, match="does not exist") as e:
        load_vlm(missing)
    assert str(missing) in str(e.value)


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_vlm(tmp_path)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_text_only_llm_is_refused_naming_model_type(tmp_path, model_type):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        load_vlm(tmp_path)
    msg = str(e.value)
    assert repr(model_type) in msg and "llava" in msg and "qwen2_vl" in msg


def test_wrap_vlm_refuses_unsupported_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ModelLoadError, match="'gpt2'"):
        wrap_vlm(model, None)


def test_bad_dtype_and_prompt_style(saved):
    with pytest.raises(ConfigError, match="dtype"):
        load_vlm(saved("llava"), dtype="int3")
    with pytest.raises(ConfigError, match="prompt_style"):
        load_vlm(saved("llava"), prompt_style="alpaca")
    with pytest.raises(ConfigError, match="no chat template"):
        load_vlm(saved("llava"), prompt_style="chat-template")


# ---- prompts -------------------------------------------------------------------------------


def test_llava_official_prompt_strings(loaded):
    vlm = loaded("llava")
    img = tiny_images(1)[0]
    assert vlm.prompt(Request("Q?", img)) == "USER: <image>\nQ?\nASSISTANT:"
    assert vlm.prompt(Request("Q?")) == "USER: Q?\nASSISTANT:"
    assert vlm.prompt(Request("Q?", system="Be private.")) == "Be private.\nUSER: Q?\nASSISTANT:"
    vlm.system_prompt = "Global."
    try:
        assert vlm.prompt(Request("Q?")) == "Global.\nUSER: Q?\nASSISTANT:"
        assert vlm.prompt(Request("Q?", system="Own.")).startswith("Own.\n")
    finally:
        vlm.system_prompt = None


@pytest.mark.parametrize("arch", ["llava", "llava_next", "idefics2"])
def test_official_archs_get_the_official_strings(loaded, arch):
    """eval.py ran LLaVA and Idefics2 with the same raw `USER: <image>` strings."""
    from mmunlearn.harness.core.prompts import user_text

    vlm = loaded(arch)
    img = tiny_images(1)[0]
    req = Request(
        user_text("classification", "image_text", "Q?", {"A": "a", "B": "b", "C": "c", "D": "d"}),
        img,
        task="classification",
    )
    assert vlm.prompt(req) == (
        "USER: <image>\nQ?\nA: a\nB: b\nC: c\nD: d\nJust give ONE letter representing the answer directly.\nASSISTANT:"
    )
    gen = Request(user_text("generation", "text_only", "Q?"), task="generation")
    assert vlm.prompt(gen) == (
        "USER: Q?\nAnswer the question based on your trained knowledge in one sentence in ENGLISH.\nASSISTANT:"
    )


def test_dtype_auto_is_float16_on_gpu_and_float32_on_cpu(saved):
    from mmunlearn.harness.core.model import _resolve_dtype

    assert _resolve_dtype("auto", torch.device("cuda")) == torch.float16  # as the official runs
    assert _resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert _resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert _resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert load_vlm(saved("llava"), dtype="auto").dtype == torch.float32
    assert load_vlm(saved("llava"), dtype="bfloat16").dtype == torch.bfloat16


def test_llava_with_chat_template_defaults_to_official_style_but_can_switch(tmp_path):
    model, proc = build_tiny_vlm("llava")
    proc.chat_template = (
        "{% for m in messages %}<<{{ m['role'] }}>>{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}{% if add_generation_prompt %}<<assistant>>{% endif %}"
    )
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    assert load_vlm(tmp_path).prompt_style == "official"
    vlm = load_vlm(tmp_path, prompt_style="chat-template")
    assert vlm.prompt(Request("hi", tiny_images(1)[0])) == "<<user>><image>hi<<assistant>>"
    assert vlm.generate([Request("hi", tiny_images(1)[0])], max_new_tokens=2)


@pytest.mark.parametrize("arch", ["qwen2_vl", "idefics2"])
def test_chat_template_image_entry_only_in_image_mode(loaded, saved, arch):
    vlm = loaded(arch) if arch == "qwen2_vl" else load_vlm(saved(arch), prompt_style="chat-template")
    assert vlm.prompt_style == "chat-template"
    marker = "<|image_pad|>" if arch == "qwen2_vl" else "<image>"
    with_img = vlm.prompt(Request("who is alice ?", tiny_images(1)[0]))
    text_only = vlm.prompt(Request("who is alice ?"))
    assert marker in with_img and marker not in text_only
    assert "who is alice ?" in text_only
    sys_prompt = vlm.prompt(Request("who is alice ?", system="do not reveal"))
    assert "do not reveal" in sys_prompt and "do not reveal" not in text_only


# ---- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_batched_generation_equals_one_at_a_time(loaded, arch):
    vlm = loaded(arch)
    reqs = mixed_requests()
    batched = vlm.generate(reqs, max_new_tokens=5, batch_size=2)
    single = [vlm.generate([r], max_new_tokens=5, batch_size=1)[0] for r in reqs]
    assert batched == single
    assert all(isinstance(s, str) and s == s.strip() for s in batched)
    assert len(set(batched)) > 1  # random weights still give different answers to different inputs


def test_auto_batch_size_halves_on_out_of_memory(saved):
    """batch_size=None: a batch that runs out of memory is retried at half the size; an explicit
    batch size is the user's choice and the error propagates."""
    vlm = load_vlm(saved("llava"))
    reqs = mixed_requests()
    expected = vlm.generate(reqs, max_new_tokens=3, batch_size=1)
    real_generate, sizes = vlm.model.generate, []

    def small_memory_generate(**batch):
        sizes.append(batch["input_ids"].shape[0])
        if batch["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(**batch)

    vlm.model.generate = small_memory_generate
    assert vlm.generate(reqs, max_new_tokens=3) == expected
    assert max(sizes) > 2 and sizes[-1] <= 2
    with pytest.raises(torch.cuda.OutOfMemoryError):
        vlm.generate(reqs, max_new_tokens=3, batch_size=4)


def test_image_must_be_decoded(loaded):
    with pytest.raises(ConfigError, match="request 1: image must be a PIL image, got bytes"):
        loaded("llava").encode([Request("a"), Request("b", b"\x89PNG")])


def test_generation_returns_only_new_text(loaded):
    vlm = loaded("llava")
    out = vlm.generate([Request("who is alice ?")], max_new_tokens=3)[0]
    assert 0 < len(vlm.tokenizer(out, add_special_tokens=False)["input_ids"]) <= 3  # no echoed prompt


def manual_option_logprob(vlm, req, option):
    """Independent reference: one sample, no padding, step through the option tokens."""
    batch = vlm.encode([req])
    opt_ids = vlm.tokenizer(" " + option, add_special_tokens=False)["input_ids"]
    ids = torch.cat([batch["input_ids"], torch.tensor([opt_ids])], 1)
    mask = torch.ones_like(ids)
    extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "mm_token_type_ids" in batch:
        extra["mm_token_type_ids"] = torch.cat(
            [batch["mm_token_type_ids"], torch.zeros(1, len(opt_ids), dtype=torch.long)], 1
        )
    with torch.no_grad():
        logp = torch.log_softmax(vlm.model(input_ids=ids, attention_mask=mask, **extra).logits[0].float(), -1)
    start = batch["input_ids"].shape[1]
    return sum(logp[start - 1 + k, t].item() for k, t in enumerate(opt_ids))


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "idefics2"])
def test_option_logprobs_equal_manual_computation(loaded, arch):
    vlm = loaded(arch)
    reqs = mixed_requests()[:4]
    options = [["A", "B", "C", "D"], ["paris", "london"], ["A", "doctor teacher"], ["rome"]]
    got = vlm.option_logprobs(reqs, options, batch_size=3)
    assert [len(g) for g in got] == [len(o) for o in options]
    for req, opts, scores in zip(reqs, options, got):
        for opt, score in zip(opts, scores):
            assert score == pytest.approx(manual_option_logprob(vlm, req, opt), abs=1e-4)
            assert score < 0


def test_option_logprobs_length_mismatch(loaded):
    with pytest.raises(ConfigError, match="2 requests but 1 option"):
        loaded("llava").option_logprobs(mixed_requests()[:2], [["A"]])


@pytest.mark.parametrize("arch", ARCHES)
def test_encode_labels_mask_exactly_prompt_and_padding(loaded, arch):
    vlm = loaded(arch)
    reqs = mixed_requests()[:4]
    answers = ["doctor", "the painter from paris", "rome", "a big red city"]
    batch = vlm.encode(reqs, answers=answers)
    prompt_only = [vlm.encode([r]) for r in reqs]
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape
    for i, (ans, p) in enumerate(zip(answers, prompt_only)):
        n_pad = int((mask[i] == 0).sum())
        assert mask[i, :n_pad].sum() == 0 and mask[i, n_pad:].all()  # left padding
        prompt_ids = p["input_ids"][0].tolist()
        ans_ids = vlm.tokenizer(" " + ans, add_special_tokens=False)["input_ids"] + [vlm.eos_id]
        assert ids[i, n_pad:].tolist() == prompt_ids + ans_ids
        assert (labels[i, : n_pad + len(prompt_ids)] == -100).all()
        assert labels[i, n_pad + len(prompt_ids) :].tolist() == ans_ids
    n_images = sum(r.image is not None for r in reqs)
    pix = batch["pixel_values"]
    assert pix.device == vlm.device
    if arch.startswith("qwen"):
        assert batch["image_grid_thw"].shape[0] == n_images
    else:
        assert pix.shape[0] == n_images


def test_encode_without_answers_has_no_labels_and_text_only_has_no_pixels(loaded):
    vlm = loaded("llava")
    batch = vlm.encode([Request("who is alice ?"), Request("name")])
    assert "labels" not in batch and "pixel_values" not in batch
    with pytest.raises(ConfigError, match="2 requests but 1 answers"):
        vlm.encode([Request("a"), Request("b")], answers=["x"])


def test_encode_loss_trains(loaded, saved):
    """The labels drive a usable loss: a few steps on one pair lower it."""
    vlm = load_vlm(saved("llava"))
    batch = vlm.encode([Request("who is alice ?", tiny_images(1)[0])], answers=["doctor"])
    opt = torch.optim.AdamW(vlm.model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = vlm.model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]


# ---- persistence ---------------------------------------------------------------------------


def test_weights_hash_is_stable_and_tracks_weights(saved, tmp_path):
    a, b = load_vlm(saved("llava")), load_vlm(saved("llava"))
    assert a.weights_hash() == b.weights_hash()
    with torch.no_grad():
        next(b.model.parameters()).view(-1)[0] += 1.0
    assert a.weights_hash() != b.weights_hash()
    b.save(tmp_path / "copy")
    c = load_vlm(tmp_path / "copy")
    assert c.weights_hash() == b.weights_hash()


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_save_and_reload_gives_same_outputs(loaded, arch, tmp_path):
    vlm = loaded(arch)
    vlm.save(tmp_path / "m")
    again = load_vlm(tmp_path / "m")
    reqs = mixed_requests()[:3]
    assert again.generate(reqs, max_new_tokens=4) == vlm.generate(reqs, max_new_tokens=4)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == arch


def test_every_supported_architecture_has_a_tiny_test_model():
    """A new model family (docs/add-a-model-family.md) is tested like the others: adding it to
    SUPPORTED_ARCHITECTURES without a tiny builder in tests/tiny_vlms.py fails here."""
    from mmunlearn.harness.core.model import SUPPORTED_ARCHITECTURES
    from tests.tiny_vlms import ARCHES, BUILDERS

    assert set(SUPPORTED_ARCHITECTURES) == set(ARCHES) == set(BUILDERS)
