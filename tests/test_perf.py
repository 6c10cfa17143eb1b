"""The speed scripts under perf/: behaviour only (a summary line with its fields, the
identical-answers check, positive memory figures, refusals). No timing is asserted anywhere."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from perf import common, eval_throughput, manu_stats, prompt_forward
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH
from mmunlearn.harness.embedded.tiny_data import build_processor, vocabulary_texts
from tests.tiny_vlms import make_tiny_vlm

NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"


@pytest.fixture(autouse=True)
def restore_globals(monkeypatch):
    """main() silences progress bars and library logging process-wide (it is a script); undo that."""
    from transformers.utils import logging as hf_logging

    from mmunlearn.harness.core import progress

    monkeypatch.setattr(progress, "_quiet", progress._quiet)
    monkeypatch.setenv("TQDM_DISABLE", os.environ.get("TQDM_DISABLE", ""))
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return make_tiny_vlm("llava", tmp_path_factory.mktemp("bench-models"))


def _one_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, captured.out
    return lines[0], captured.err


def test_eval_throughput_batched_answers_equal_per_question_answers(tiny_llava, tmp_path, capsys):
    out = tmp_path / "throughput.json"
    rc = eval_throughput.main(
        [
            "--model",
            str(tiny_llava),
            "--n",
            "6",
            "--batch",
            "4",
            "--max-new-tokens",
            "5",
            "--task",
            "cloze",
            "--mode",
            "image_text",
            "--json",
            str(out),
        ]
    )
    line, err = _one_line(capsys)
    assert rc == 0
    m = re.fullmatch(
        rf"eval_throughput model=llava device=cpu dtype=float32 threads=\d+ task=cloze mode=image_text n=6 batch=4: "
        rf"batched ({NUMBER}) q/s, per-question ({NUMBER}) q/s, speed-up ({NUMBER})x, identical 6/6",
        line,
    )
    assert m, line
    assert all(float(g) > 0 for g in m.groups())
    assert "it/s" not in err and "%|" not in err  # no progress bars unless --progress
    figures = json.loads(out.read_text())
    assert figures["identical"] == figures["n"] == len(figures["qids"]) == 6
    assert figures["summary"] == line and figures["differing"] == [] and figures["other_processes_cores"] >= 0


def test_prompt_forward_prints_per_batch_times_and_rates(tiny_llava, tmp_path, capsys):
    out = tmp_path / "forward.json"
    argv = ["--model", str(tiny_llava), "--n", "4", "--batches", "1", "2", "--repeat", "1", "--json", str(out)]
    assert prompt_forward.main(argv) == 0
    line, _ = _one_line(capsys)
    assert re.search(rf"ms per question batch 1 {NUMBER}, batch 2 {NUMBER}; language-model linears {NUMBER}", line)
    figures = json.loads(out.read_text())
    assert set(figures["ms_per_question"]) == {"1", "2"} and all(v > 0 for v in figures["ms_per_question"].values())
    assert figures["tokens"] > 4 and figures["model_gflops"] > 0 and figures["matmul_gflops"]["large"] > 0


def test_eval_throughput_text_only_generation(tiny_llava, capsys):
    rc = eval_throughput.main(
        [
            "--model",
            str(tiny_llava),
            "--n",
            "3",
            "--batch",
            "2",
            "--max-new-tokens",
            "4",
            "--task",
            "generation",
            "--mode",
            "text_only",
            "--set",
            "forget",
        ]
    )
    line, _ = _one_line(capsys)
    assert rc == 0 and "task=generation mode=text_only n=3 batch=2" in line and line.endswith("identical 3/3")


def test_eval_throughput_exits_1_when_answers_differ(tiny_llava, monkeypatch, capsys):
    from mmunlearn.harness.core.model import VLM

    real = VLM.generate

    def flaky(self, reqs, max_new_tokens=50, batch_size=None, desc=None):
        outs = real(self, reqs, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc)
        return outs if batch_size == 1 else [o + " (batched)" for o in outs]

    monkeypatch.setattr(VLM, "generate", flaky)
    rc = eval_throughput.main(["--model", str(tiny_llava), "--n", "3", "--batch", "3", "--max-new-tokens", "2"])
    line, _ = _one_line(capsys)
    assert rc == 1 and line.endswith("identical 0/3")


def test_manu_stats_reports_the_ratio_and_positive_memory_at_two_sizes(tiny_llava, tmp_path, capsys):
    out = tmp_path / "manu.json"
    rc = manu_stats.main(
        ["--model", str(tiny_llava), "--n", "4", "--scale", "2", "--batch", "2", "--repeat", "1", "--json", str(out)]
    )
    line, err = _one_line(capsys)
    assert rc == 0
    m = re.fullmatch(
        rf"manu_stats model=llava device=cpu dtype=float32 threads=\d+ variant=paper batch=2 n=4: "
        rf"statistics ({NUMBER}) s, forward ({NUMBER}) s, ratio ({NUMBER})x \(model calls only ({NUMBER})x\); "
        rf"peak memory n=4 ({NUMBER}) MiB, n=8 ({NUMBER}) MiB \(x({NUMBER})\); "
        rf"growth over the start n=4 (?:{NUMBER}) MiB, n=8 (?:{NUMBER}) MiB; "
        rf"heap n=4 ({NUMBER}) MiB, n=8 ({NUMBER}) MiB",
        line,
    )
    assert m, line
    assert all(float(g) > 0 for g in m.groups())
    assert "it/s" not in err and "%|" not in err
    figures = json.loads(out.read_text())
    assert set(figures["memory"]) == {"4", "8"}
    for mem in figures["memory"].values():
        assert mem["peak_bytes"] > 0 and mem["heap_peak_bytes"] > 0
    assert figures["neurons"] > 0 and figures["ratio"] > 0


def test_manu_stats_statistics_pass_is_what_manu_collects(tiny_llava):
    """The timed pass streams the four buckets of mmunlearn.methods.manu.collect_statistics, n samples each."""
    from mmunlearn.harness.core.model import load_vlm
    from mmunlearn.harness.core.neurons import neuron_map

    bench = load_benchmark(DEFAULT_BENCH, forget=15)
    vlm = load_vlm(tiny_llava, device="cpu")
    nmap = neuron_map(vlm.model)
    stats = manu_stats.statistics_pass(vlm, nmap, manu_stats.sized_data(bench, 3), 2, "paper", 0.1)
    assert set(stats) == {"forget_image_text", "forget_text_only", "retain_image_text", "retain_text_only"}
    language = nmap.tower == "language"
    assert all((s["n"][language] == 3).all() for s in stats.values())


def test_manu_stats_official_variant_runs(tiny_llava, capsys):
    rc = manu_stats.main(
        [
            "--model",
            str(tiny_llava),
            "--n",
            "2",
            "--scale",
            "2",
            "--batch",
            "2",
            "--repeat",
            "1",
            "--variant",
            "official",
        ]
    )
    line, _ = _one_line(capsys)
    assert rc == 0 and "variant=official" in line


def test_llava_7b_shape_matches_the_published_config():
    shape = common.SHAPES["llava-7b"]
    bench = load_benchmark(DEFAULT_BENCH, forget=15)
    tok = common.shape_tokenizer(shape, vocabulary_texts(bench))
    cfg = common.shape_config(shape, tok)
    v, t = cfg.vision_config, cfg.text_config
    assert (
        v.hidden_size,
        v.num_hidden_layers,
        v.num_attention_heads,
        v.intermediate_size,
        v.image_size,
        v.patch_size,
    ) == (1024, 24, 16, 4096, 336, 14)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size, t.vocab_size) == (
        4096,
        32,
        32,
        11008,
        32064,
    )
    assert len(tok) == 32064 and cfg.image_token_id == 32000 and tok.pad_token_id == 32001
    # the rest of llava-hf/llava-1.5-7b-hf's config.json: what the forward pass computes with
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy, cfg.projector_hidden_act) == (
        -2,
        "default",
        "gelu",
    )
    assert (v.hidden_act, t.rms_norm_eps, t.num_key_value_heads, t.max_position_embeddings) == (
        "quick_gelu",
        1e-5,
        32,
        4096,
    )
    assert 6.9e9 < common.approx_params(shape) < 7.2e9
    # the processor expands <image> to (336/14)^2 = 576 tokens and every id decodes
    from PIL import Image

    proc = build_processor(tok, shape.image_size, shape.patch_size)
    enc = proc(
        text=["USER: <image>\nwho is this person ?\nASSISTANT:"],
        images=[Image.new("RGB", (40, 30))],
        return_tensors="pt",
    )
    assert (enc["input_ids"] == 32000).sum().item() == 576
    assert tuple(enc["pixel_values"].shape) == (1, 3, 336, 336)
    assert isinstance(tok.decode([5, 31000, 32063]), str)


def test_llava_7b_shape_is_refused_on_cpu_unless_shrunk(capsys):
    rc = manu_stats.main(["--shape", "llava-7b", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "CUDA" in err and "--layers" in err
    rc = eval_throughput.main(["--layers", "1"])  # --layers without --shape
    assert rc == 2 and "--shape" in capsys.readouterr().err


def test_shrunk_llava_7b_shape_runs_both_scripts(capsys):
    shrink = ["--shape", "llava-7b", "--layers", "1", "--width-div", "32", "--device", "cpu"]
    rc = eval_throughput.main(shrink + ["--n", "2", "--batch", "2", "--max-new-tokens", "3"])
    line, _ = _one_line(capsys)
    assert rc == 0 and line.startswith("eval_throughput model=llava-7b[layers=1,width/32] device=cpu")
    assert line.endswith("identical 2/2")
    rc = manu_stats.main(shrink + ["--n", "2", "--scale", "2", "--batch", "2", "--repeat", "1"])
    line, _ = _one_line(capsys)
    assert rc == 0 and line.startswith("manu_stats model=llava-7b[layers=1,width/32]")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_llava_7b_shape_defaults_to_bf16_on_cuda():  # pragma: no cover - CPU machines
    import argparse

    args = argparse.Namespace(shape="llava-7b", layers=1, width_div=32, device="cuda", dtype="auto", seed=0, model=None)
    vlm, label = common.load_model(args, load_benchmark(DEFAULT_BENCH, forget=15))
    assert vlm.dtype == torch.bfloat16 and vlm.device.type == "cuda"
