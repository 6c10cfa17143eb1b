"""Every registered method, built-in or added, keeps the method contract (harness/core/contracts.py):
the same seed gives the same model, the model is left in eval mode, the report has the
documented keys, and a run of it resumes from its checkpoint to identical metrics."""

from __future__ import annotations

import json
import shutil

import pytest

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.model import wrap_vlm
from mmunlearn.harness.embedded.minibench import build_minibench
from mmunlearn.harness.app.runner import RunConfig, run_benchmark
from mmunlearn.harness.core.contracts import MethodResult, UnlearnData, get_method, parse_params, registered_methods
from mmunlearn.harness.core.contracts import REPORT_KEYS


METHODS = list(registered_methods())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.tiny_vlms import make_tiny_vlm

    root = tmp_path_factory.mktemp("conformance")
    make_tiny_vlm("llava", root / "tiny")
    build_minibench(root / "bench", seed=0, n_profiles=20, n_celebrities=4)
    return root


def _fresh_vlm():
    from tests.tiny_vlms import build_tiny_vlm

    return wrap_vlm(*build_tiny_vlm("llava", seed=0))


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_model_eval_mode_and_documented_report(name, world):
    data = UnlearnData.from_benchmark(load_benchmark(world / "bench", forget=15))
    cls = get_method(name)
    results = [cls().apply(_fresh_vlm(), data, parse_params(cls, {}), 3) for _ in range(2)]
    for r in results:
        assert isinstance(r, MethodResult)
        assert not r.vlm.model.training
        assert set(REPORT_KEYS) <= set(r.report) and r.report["method"] == name and r.report["seed"] == 3
        assert isinstance(r.report["changed"], dict) and isinstance(r.report["seconds"], dict)
        json.dumps(r.report, default=str)  # the report goes into results.json
    assert results[0].vlm.weights_hash() == results[1].vlm.weights_hash()
    assert results[0].system_prompt == results[1].system_prompt


@pytest.mark.parametrize("name", METHODS)
def test_a_run_resumes_from_its_checkpoint_to_identical_metrics(name, world, tmp_path):
    cfg = dict(
        model=str(world / "tiny" / "llava"),
        bench=str(world / "bench"),
        forget=15,
        method=name,
        sets=("forget",),
        tasks=("cloze",),
        limit=2,
        shots=0,
        max_new_tokens=2,
        judge=None,
        keep_model=True,
    )
    out = tmp_path / "run"
    first = run_benchmark(RunConfig(**cfg), out, progress=False)
    for f in ("samples.jsonl", "results.json", "method.json"):  # as if killed right after the method ran
        (out / f).unlink()
    again = run_benchmark(RunConfig(**cfg), out, progress=False)
    assert again["metrics"] == first["metrics"]
    changed = first["manifest"]["method"]["weights_changed"]
    assert again["manifest"]["method"]["checkpoint"]["reused"] is changed  # weight changes are never redone
    assert again["manifest"]["model"]["unlearned_weights_hash"] == first["manifest"]["model"]["unlearned_weights_hash"]
    shutil.rmtree(out)


@pytest.mark.parametrize("name", METHODS)
def test_a_method_that_says_it_is_seed_independent_gives_the_same_model_under_every_seed(name, world):
    """`run --seeds` runs a seed-independent method once: the claim must hold, not be assumed."""
    cls = get_method(name)
    data = UnlearnData.from_benchmark(load_benchmark(world / "bench", forget=15))
    results = [cls().apply(_fresh_vlm(), data, parse_params(cls, {}), seed) for seed in (0, 1, 7)]
    same = {(r.vlm.weights_hash(), r.system_prompt) for r in results}
    if not cls.seed_dependent:
        assert len(same) == 1, f"{name} says seed_dependent = False, but seeds 0, 1, 7 gave different models"
    elif name in ("ga", "grad_diff", "kl_min", "npo", "mmunlearner"):  # the built-in training methods
        assert len(same) > 1, f"{name} gave the same model under seeds 0, 1, 7: is it seed-independent?"
