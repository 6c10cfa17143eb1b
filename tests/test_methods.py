"""The method plugin API (registry, parameter parsing, data) and every registered method on a tiny
random LLaVA: each runs, reports, and does what its name promises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.contracts import MethodResult
from mmunlearn.harness.core.contracts import (
    METHOD_REGISTRY,
    Method,
    MethodParams,
    UnlearnData,
    get_method,
    parse_params,
    register_method,
    registered_methods,
)
from mmunlearn.harness.core.contracts import encode_pairs
from mmunlearn.harness.core.contracts import mean_answer_nll
from mmunlearn.methods.training import language_linear_modules

ALL_METHODS = {"vanilla", "prompting", "ga", "grad_diff", "kl_min", "npo", "manu", "mmunlearner"}
TRAINING = ("ga", "grad_diff", "kl_min", "npo")


# ----------------------------------------------------------------------------- registry and parameters


def test_every_method_is_registered():
    assert ALL_METHODS <= set(registered_methods())
    for name in ALL_METHODS:
        cls = get_method(name)
        assert cls.name == name and cls.description
        cls.Params()  # defaults are valid


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown method 'gradient_ascent'; known: .*ga, grad_diff"):
        get_method("gradient_ascent")


@pytest.fixture
def toy_method():
    @register_method
    class Toy(Method):
        """A toy method for testing the plugin API."""

        name = "toy_test_method"

        @dataclass
        class Params(MethodParams):
            flag: bool = False
            steps: int = 3
            rate: float = 0.5
            label: str = "x"
            mode: Literal["a", "b"] = "a"
            modes: tuple[Literal["image_text", "text_only"], ...] = ("image_text",)
            path: str | None = None

            def validate(self):
                self.require("steps", self.steps >= 1, "an integer >= 1")

        def apply(self, vlm, data, params, seed):
            return MethodResult(vlm, {"changed": {}, "seconds": {}})

    yield Toy
    del METHOD_REGISTRY["toy_test_method"]


def test_a_new_method_is_one_registered_class(toy_method):
    assert get_method("toy_test_method") is toy_method
    assert toy_method.description == "A toy method for testing the plugin API."


def test_parse_params_converts_cli_strings_to_field_types(toy_method):
    p = parse_params(
        toy_method,
        {
            "flag": "true",
            "steps": "7",
            "rate": "1e-3",
            "label": "hello",
            "mode": "b",
            "modes": "image_text,text_only",
            "path": "none",
        },
    )
    assert (p.flag, p.steps, p.rate, p.label, p.mode, p.modes, p.path) == (
        True,
        7,
        1e-3,
        "hello",
        "b",
        ("image_text", "text_only"),
        None,
    )
    assert parse_params(toy_method, {"flag": "no", "path": "/tmp/x"}).flag is False
    assert parse_params(toy_method, {}) == toy_method.Params()
    assert parse_params(toy_method, {"steps": 4}).steps == 4  # typed values pass through
    assert parse_params(toy_method, {"modes": ["text_only"]}).modes == ("text_only",)  # JSON lists


@pytest.mark.parametrize(
    "raw,needles",
    [
        ({"stepz": "3"}, ["unknown parameter 'stepz'", "known: flag, steps, rate"]),
        ({"steps": "three"}, ["steps='three'", "an integer"]),
        ({"steps": "0"}, ["steps=0", "an integer >= 1"]),
        ({"rate": "fast"}, ["rate='fast'", "a number"]),
        ({"flag": "maybe"}, ["flag='maybe'", "true or false"]),
        ({"mode": "c"}, ["mode='c'", "one of a, b"]),
        ({"modes": "image_text,audio"}, ["modes='image_text,audio'", "one of image_text, text_only"]),
    ],
)
def test_bad_parameters_raise_config_error_naming_method_key_value_allowed(toy_method, raw, needles):
    with pytest.raises(ConfigError) as err:
        parse_params(toy_method, raw)
    assert "method 'toy_test_method'" in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


def test_python_construction_is_validated_too():
    with pytest.raises(ConfigError, match="method 'ga': parameter forget_modes='video'"):
        get_method("ga").Params(forget_modes=("video",))
    with pytest.raises(ConfigError, match="method 'npo': parameter beta=0"):
        get_method("npo").Params(beta=0)
    with pytest.raises(ConfigError, match="method 'mmunlearner': parameter masks='all'"):
        parse_params(get_method("mmunlearner"), {"masks": "all"})


def test_methods_with_shared_params_name_themselves_in_errors():
    for name in TRAINING:
        with pytest.raises(ConfigError, match=f"method '{name}': parameter lr=-1"):
            parse_params(get_method(name), {"lr": "-1"})


def test_unlearn_data_from_benchmark(small_bench):
    from mmunlearn.harness.core.bench import load_benchmark

    bench = load_benchmark(small_bench, forget=5)
    data = UnlearnData.from_benchmark(bench)
    for ds, table in (("forget", data.forget), ("retain", data.retain)):
        assert set(table) == {"image_text", "text_only"}
        assert table["image_text"] == bench.fact_pairs(ds, "image_text")
        assert all(p.image is not None for p in table["image_text"])
        assert all(p.image is None for p in table["text_only"])
    forget_ids = {p.profile_id for p in data.forget["image_text"]}
    assert forget_ids and not forget_ids & {p.profile_id for p in data.retain["image_text"]}


# ----------------------------------------------------------------------------- methods on a tiny LLaVA


@pytest.fixture(scope="module")
def data():
    from tests.tiny_vlms import tiny_unlearn_data

    return tiny_unlearn_data(["alice", "bob"], ["carol", "dave", "bob"], seed=5)


def fresh_vlm(seed: int = 0):
    from mmunlearn.harness.core.model import wrap_vlm
    from tests.tiny_vlms import build_tiny_vlm

    return wrap_vlm(*build_tiny_vlm("llava", seed=seed))


def run(name, data, seed=0, vlm=None, **params):
    """(vlm as the runner evaluates it, report)."""
    cls = get_method(name)
    result = cls().apply(vlm or fresh_vlm(), data, parse_params(cls, params), seed)
    assert isinstance(result, MethodResult)
    result.vlm.system_prompt = result.system_prompt
    return result.vlm, result.report


def forget_nll(vlm, data) -> float:
    with torch.no_grad():
        return mean_answer_nll(vlm.model, encode_pairs(vlm, data.forget["image_text"])).mean().item()


def tower_state(vlm, tower):
    from mmunlearn.harness.core.neurons import tower_paths

    prefix = tower_paths(vlm.model)[tower] + "."
    return {k: v.clone() for k, v in vlm.model.state_dict().items() if k.startswith(prefix)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
def test_every_method_runs_and_reports(name, data):
    vlm, report = run(name, data)
    assert report["method"] == name and report["seed"] == 0
    assert isinstance(report["changed"], dict) and report["changed"]
    assert all(isinstance(s, float) for s in report["seconds"].values())
    assert report["params"] == {
        k: list(v) if isinstance(v, tuple) else v for k, v in vars(get_method(name).Params()).items()
    }
    assert not vlm.model.training
    from mmunlearn.harness.core.model import Request

    assert len(vlm.generate([Request("what is the job of alice ?")], max_new_tokens=3)) == 1


def test_vanilla_and_prompting_change_no_weights(data):
    from mmunlearn.harness.core.prompts import PROMPTING_SYSTEM_PROMPT

    vlm = fresh_vlm()
    h = vlm.weights_hash()
    vlm, _ = run("vanilla", data, vlm=vlm)
    assert vlm.weights_hash() == h and vlm.system_prompt is None
    vlm, report = run("prompting", data, vlm=vlm)
    assert vlm.weights_hash() == h
    assert vlm.system_prompt == PROMPTING_SYSTEM_PROMPT and report["changed"]["weights"] == "none"
    vlm, _ = run("prompting", data, vlm=vlm, system_prompt="Say nothing.")
    assert vlm.system_prompt == "Say nothing."


@pytest.mark.parametrize("name", TRAINING)
def test_training_methods_raise_forget_nll_and_leave_a_plain_model(name, data):
    vlm = fresh_vlm()
    vision = tower_state(vlm, "vision")
    before = forget_nll(vlm, data)
    vlm, report = run(name, data, vlm=vlm, lr="3e-3", epochs="3")
    assert forget_nll(vlm, data) > before + 0.05
    assert not any("lora" in k for k in vlm.model.state_dict())  # merged back into the weights
    assert not any(p.requires_grad for p in vlm.model.parameters())
    assert same(tower_state(vlm, "vision"), vision)  # LoRA only on the language model
    assert report["changed"]["steps"] == 3 and len(report["loss_by_epoch"]) == 3


def test_lora_targets_are_the_language_models_linear_layers():
    names = language_linear_modules(fresh_vlm().model)
    assert names and all(".language_model." in n for n in names)
    assert any(n.endswith("q_proj") for n in names) and any(n.endswith("down_proj") for n in names)


def test_full_finetuning_option(data):
    vlm = fresh_vlm()
    before = forget_nll(vlm, data)
    vlm, report = run("ga", data, vlm=vlm, finetune="full", lr="1e-3")
    assert forget_nll(vlm, data) > before
    assert report["changed"]["trainable_parameters"] == sum(p.numel() for p in vlm.model.parameters())


def test_training_is_deterministic_given_the_seed(data):
    a = run("grad_diff", data, seed=1, lr="1e-3")[0].weights_hash()
    b = run("grad_diff", data, seed=1, lr="1e-3")[0].weights_hash()
    c = run("grad_diff", data, seed=2, lr="1e-3")[0].weights_hash()
    assert a == b != c


def test_forget_modes_option_adds_text_only_pairs(data):
    _, report = run("ga", data, forget_modes="image_text,text_only")
    assert report["changed"]["forget_pairs"] == 4


def test_npo_reference_model_from_a_path(data, tmp_path):
    from tests.tiny_vlms import make_tiny_vlm

    ref = make_tiny_vlm("llava", tmp_path, seed=0)
    _, report = run("npo", data, ref_model=str(ref))
    assert report["reference"] == str(ref)


def test_training_needs_forget_pairs():
    empty = UnlearnData(forget={"image_text": []}, retain={})
    with pytest.raises(ConfigError, match="method 'ga': no forget pairs"):
        run("ga", empty)


@pytest.mark.parametrize("masks,frozen", [("vision", "language"), ("language", "vision")])
def test_mmunlearner_updates_only_the_masked_tower(data, masks, frozen):
    vlm = fresh_vlm()
    kept = tower_state(vlm, frozen)
    changed = tower_state(vlm, masks)
    vlm, report = run("mmunlearner", data, vlm=vlm, masks=masks, lr="1e-3")
    assert same(tower_state(vlm, frozen), kept)
    assert not same(tower_state(vlm, masks), changed)
    assert set(report["changed"]["masked_weights"]) == {masks}
    assert 0 < report["changed"]["masked_fraction"][masks] < 1
    assert report["changed"]["forget_steps"] == 1 and report["changed"]["retain_steps"] == 1


def test_mmunlearner_saliency_mask_is_the_elementwise_ratio_test():
    from mmunlearn.methods.mmunlearner import saliency_mask

    f = {"w": torch.tensor([2.0, 1.0, 0.0, 0.5])}
    p = {"w": torch.tensor([1.0, 1.0, 0.0, 1.0])}
    assert saliency_mask(f, p, 1.0)["w"].tolist() == [True, True, True, False]
    assert saliency_mask(f, p, 1.5)["w"].tolist() == [True, False, False, False]
