"""The first user story end to end: an unlearned checkpoint made elsewhere (a full model
directory or a PEFT adapter) scored by name, its base model checked and recorded, put beside
the reference runs in one leaderboard and checked against one of their rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmunlearn.harness.app.check import compare
from mmunlearn.harness.app.cli import main
from mmunlearn.harness.core.model import load_vlm, wrap_vlm
from tests.tiny_vlms import make_tiny_vlm

EVAL = ["--forget", "15", "--shots", "0", "--sets", "forget", "retain", "--tasks", "cloze"]
EVAL += ["--limit", "4", "--max-new-tokens", "3", "--judge", "none", "--quiet"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_tiny_vlm("llava", tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def reference_root(base, small_bench, tmp_path_factory) -> Path:
    """A result root as the demo writes one: root/runs/<run>/results.json."""
    root = tmp_path_factory.mktemp("reference")
    for folder, extra in (("vanilla", []), ("ga", ["--method", "ga", "--param", "lr=1e-2"])):
        args = ["run", "--model", str(base), "--bench", str(small_bench), *EVAL, *extra]
        assert main([*args, "--out", str(root / "runs" / folder)]) == 0
    return root


def perturbed_copy(base: Path, out: Path) -> Path:
    """A full model directory saved as any HF trainer would: the base with changed weights."""
    vlm = load_vlm(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in vlm.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vlm.save(out)
    return out


def lora_adapter(base: Path, out: Path) -> tuple[Path, str]:
    """A saved PEFT LoRA adapter (adapter files only, no tokenizer) and the weights hash of the
    model it stands for (the base with the adapter merged in, computed here by hand)."""
    from peft import LoraConfig, get_peft_model

    vlm = load_vlm(base)
    model = get_peft_model(vlm.model, LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out)
    merged = wrap_vlm(model.merge_and_unload(), vlm.processor)
    assert not (out / "tokenizer.json").exists()
    return out, merged.weights_hash()


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_a_full_checkpoint_is_scored_by_name_with_its_base_recorded(base, small_bench, reference_root, tmp_path):
    ckpt = perturbed_copy(base, tmp_path / "unlearned")
    out = tmp_path / "mine"
    args = ["run", "--model", str(ckpt), "--base-model", str(base), "--name", "my-unlearning"]
    assert main([*args, "--bench", str(small_bench), *EVAL, "--out", str(out)]) == 0
    model = results(out)["manifest"]["model"]
    assert model["name"] == "my-unlearning"
    assert model["source"] == str(ckpt.resolve())
    assert model["base_model"]["source"] == str(base.resolve())
    assert model["base_model"]["adapter"] is False and model["base_model"]["model_type"] == "llava"
    assert model["weights_hash"] == load_vlm(ckpt).weights_hash() != load_vlm(base).weights_hash()

    board = tmp_path / "board"
    assert main(["leaderboard", str(reference_root), str(out), "--out", str(board)]) == 0
    md = (board / "leaderboard.md").read_text()
    assert "| my-unlearning | `" + str(tmp_path) + "` |" in md  # its row, marked with the root it came from
    assert f"| vanilla | `{reference_root}` |" in md and "Rows from 2 result roots" in md
    rows = (board / "leaderboard.csv").read_text().splitlines()
    assert sum(line.startswith("my-unlearning,vanilla,") for line in rows) == 1  # label, then the method run


def test_a_peft_adapter_is_merged_into_its_base_and_scored(base, small_bench, tmp_path):
    adapter, merged_hash = lora_adapter(base, tmp_path / "adapter")
    out = tmp_path / "lora"
    args = ["run", "--model", str(adapter), "--base-model", str(base), "--name", "my-lora"]
    assert main([*args, "--bench", str(small_bench), *EVAL, "--out", str(out)]) == 0
    model = results(out)["manifest"]["model"]
    assert model["weights_hash"] == merged_hash != load_vlm(base).weights_hash()
    assert model["base_model"]["adapter"] is True
    assert model["base_model"]["adapter_records_base"] == str(base)
    # without --base-model the adapter's own record of its base is used, and recorded
    again = tmp_path / "lora-recorded-base"
    assert main(["run", "--model", str(adapter), "--bench", str(small_bench), *EVAL, "--out", str(again)]) == 0
    assert results(again)["manifest"]["model"]["weights_hash"] == merged_hash
    assert results(again)["manifest"]["model"]["base_model"]["source"] == str(base.resolve())


def test_an_adapter_that_names_no_base_needs_base_model(base, tmp_path, capsys):
    adapter, _ = lora_adapter(base, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    out = tmp_path / "out"
    assert main(["run", "--model", str(adapter), *EVAL, "--out", str(out)]) == 2
    assert "--base-model" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "other, what", [("idefics2", "architecture 'llava' vs base 'idefics2'"), ("vocab", "vocabulary")]
)
def test_a_mismatched_base_is_refused_before_anything_is_written(base, small_bench, tmp_path, capsys, other, what):
    if other == "vocab":  # same architecture, another tokenizer
        wrong = Path(shutil.copytree(base, tmp_path / "other-vocab"))
        tok = json.loads((wrong / "tokenizer.json").read_text())
        vocab = tok["model"]["vocab"]
        vocab["zzz-extra-token"] = max(vocab.values()) + 1
        (wrong / "tokenizer.json").write_text(json.dumps(tok))
    else:
        wrong = make_tiny_vlm(other, tmp_path)
    out = tmp_path / "refused"
    args = ["run", "--model", str(base), "--base-model", str(wrong), "--name", "x", "--bench", str(small_bench)]
    assert main([*args, *EVAL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mmunlearn run: error:" in err and "was not unlearned from --base-model" in err and what in err
    assert not out.exists()  # nothing written


def test_check_compares_a_run_with_a_named_row_of_another_root(base, small_bench, reference_root, tmp_path, capsys):
    out = tmp_path / "mine"
    args = ["run", "--model", str(base), "--name", "same-as-vanilla", "--bench", str(small_bench), *EVAL]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["check", str(out), "--baseline", str(reference_root), "--row", "vanilla"]) == 0
    assert str(reference_root / "runs" / "vanilla") in capsys.readouterr().out
    ga = "ga (lr=0.01)"
    code = main(["check", str(out), "--baseline", str(reference_root), "--row", ga])
    ga_forget = results(reference_root / "runs" / "ga")["metrics"]["forget"]
    mine_forget = results(out)["metrics"]["forget"]
    # forgetting weaker than GA's beyond the tolerance: cloze accuracy, or a membership AUC (members
    # more recognisable); each such cell is judged, a regression only where it is also significant
    cells = [("cloze", "accuracy")] + [(k, "auc") for k in ("mia_loss", "mia_zlib", "mia_mink", "mia_minkpp")]
    weaker = {
        f"forget/{k}/{m} {metric}"
        for k, metric in cells
        for m in ("image_text", "text_only")
        if isinstance(a := mine_forget.get(k, {}).get(m, {}).get(metric), float)
        and isinstance(b := ga_forget.get(k, {}).get(m, {}).get(metric), float)
        and a > b + 0.02
    }
    report = compare(out, reference_root / "runs" / "ga")
    judged = {f.key for f in report.regressions + report.within_noise}
    assert weaker <= judged
    assert code == (1 if report.regressions else 0)
    assert main(["check", str(out), "--baseline", str(reference_root), "--row", "no such row"]) == 2
    assert "rows: 'vanilla', 'ga (lr=0.01)'" in capsys.readouterr().err


def test_like_takes_the_evaluation_settings_of_a_run_and_given_flags_win(base, small_bench, reference_root, tmp_path):
    like = reference_root / "runs" / "vanilla"
    out = tmp_path / "like"
    assert main(["run", "--model", str(base), "--name", "n", "--like", str(like), "--quiet", "--out", str(out)]) == 0
    mine, theirs = results(out)["manifest"]["config"], results(like)["manifest"]["config"]
    for key in ("bench", "forget", "shots", "sets", "tasks", "limit", "judge", "max_new_tokens", "scorers"):
        assert mine[key] == theirs[key], key
    assert results(out)["metrics"] == results(like)["metrics"]
    out2 = tmp_path / "like-limit"
    args = ["run", "--model", str(base), "--like", str(like), "--limit", "2", "--quiet", "--out", str(out2)]
    assert main(args) == 0
    assert results(out2)["manifest"]["config"]["limit"] == 2
