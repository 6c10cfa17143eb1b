"""Safe loading and quiet output, through the CLI on a tiny random-weight LLaVA.

* A local checkpoint with only pickle weights (.bin) is refused (unpickling can run code) with a
  message naming --allow-pickle-weights, exit code 2 through the CLI; it loads with the flag.
  --allow-pickle-weights and --trust-remote-code are recorded in the manifest.
* The tiny model's training state (harness/embedded/tiny_trainer.py Trainer) round-trips through
  torch.load(weights_only=True), and a state file that would run code is refused.
* --quiet silences every progress bar (ours and the libraries'), while an error still prints
  its one line.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from mmunlearn.harness.app.cli import main
from mmunlearn.harness.core.errors import ModelLoadError
from mmunlearn.harness.core.model import load_vlm
from mmunlearn.harness.core.progress import set_quiet
from tests.tiny_vlms import SMALL_TINY_LLAVA

BAR_MARKS = ("it/s", "s/it", "%|")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The same tiny LLaVA saved twice: safetensors (the default) and pickle-only (.bin)."""
    from tests.tiny_vlms import build_tiny_vlm

    root = tmp_path_factory.mktemp("tiny")
    model, processor = build_tiny_vlm("llava", 0)
    safe, pickled = root / "safe", root / "pickled"
    for path in (safe, pickled):
        model.save_pretrained(path)
        processor.save_pretrained(path)
    # transformers 5 writes safetensors even with safe_serialization=False: write the pickle by hand.
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    return {"safe": safe, "pickled": pickled, "state": {k: v.clone() for k, v in model.state_dict().items()}}


@pytest.fixture
def loud():
    """Progress bars on (an earlier test may have left --quiet set), and back on afterwards."""
    set_quiet(False)
    yield
    set_quiet(False)


def run_args(model, bench, out, *extra):
    """A tiny, fast run: one cloze question per mode of the forget set."""
    return [
        "run",
        "--model",
        str(model),
        "--bench",
        str(bench),
        "--forget",
        "5",
        "--sets",
        "forget",
        "--tasks",
        "cloze",
        "--limit",
        "1",
        "--shots",
        "0",
        "--judge",
        "none",
        "--max-new-tokens",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def manifest(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["manifest"]


# ---------------------------------------------------------------- pickle weights
def test_pickle_only_checkpoint_is_refused_by_load_vlm(tiny):
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model\.bin\).*--allow-pickle-weights"):
        load_vlm(tiny["pickled"])


def test_pickle_only_checkpoint_is_refused_through_the_cli_with_exit_2(tiny, small_bench, tmp_path, capfd, loud):
    out = tmp_path / "run"
    assert main(run_args(tiny["pickled"], small_bench, out)) == 2
    err = capfd.readouterr().err.strip().splitlines()  # stage messages, then the error's one line
    assert [line for line in err if "error" in line] == err[-1:]
    assert err[-1].startswith("mmunlearn run: error: model ")
    assert "pickle weights" in err[-1] and "--allow-pickle-weights" in err[-1]
    assert main(run_args(tiny["pickled"], small_bench, out, "--quiet")) == 2
    assert capfd.readouterr().err.strip().splitlines() == err[-1:]  # --quiet: the error line alone
    assert not (out / "run.json").exists() and not (out / "results.json").exists()  # refused before the run


def test_allow_pickle_weights_loads_it_and_is_recorded(tiny, small_bench, tmp_path):
    vlm = load_vlm(tiny["pickled"], allow_pickle=True)
    assert all(torch.equal(v, tiny["state"][k]) for k, v in vlm.model.state_dict().items())
    out = tmp_path / "run"
    assert main(run_args(tiny["pickled"], small_bench, out, "--allow-pickle-weights", "--quiet")) == 0
    model = manifest(out)["model"]
    assert (model["allow_pickle_weights"], model["trust_remote_code"]) == (True, False)


def test_safetensors_beside_a_pickle_load_without_the_flag(tiny, tmp_path):
    both = Path(shutil.copytree(tiny["safe"], tmp_path / "both"))
    shutil.copy(tiny["pickled"] / "pytorch_model.bin", both / "pytorch_model.bin")
    vlm = load_vlm(both)  # safetensors are used; the pickle is never opened
    assert all(torch.equal(v, tiny["state"][k]) for k, v in vlm.model.state_dict().items())


def test_trust_remote_code_is_off_by_default_and_recorded_when_given(tiny, small_bench, tmp_path):
    assert main(run_args(tiny["safe"], small_bench, tmp_path / "default", "--quiet")) == 0
    assert main(run_args(tiny["safe"], small_bench, tmp_path / "trusted", "--trust-remote-code", "--quiet")) == 0
    default, trusted = manifest(tmp_path / "default")["model"], manifest(tmp_path / "trusted")["model"]
    assert (default["trust_remote_code"], default["allow_pickle_weights"]) == (False, False)
    assert trusted["trust_remote_code"] is True


# ---------------------------------------------------------------- the tiny model's training state
class RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _trainer(bench, state_path):
    from mmunlearn.harness.embedded.tiny_recipe import Recipe, build_tiny_llava
    from mmunlearn.harness.embedded.tiny_trainer import Trainer
    from mmunlearn.harness.core.model import wrap_vlm

    recipe = Recipe(steps=4, batch_text=2, batch_image=2, check_every=1000, check_per_group=2)
    torch.manual_seed(0)
    model, processor = build_tiny_llava(bench, SMALL_TINY_LLAVA)
    return Trainer(bench, wrap_vlm(model, processor), recipe, seed=0, state_path=state_path, log=lambda line: None)


def test_training_state_round_trips_with_weights_only_and_code_is_refused(small_bench, tmp_path):
    from mmunlearn.harness.core.bench import load_benchmark

    bench = load_benchmark(small_bench)
    state = tmp_path / "state.pt"
    trainer = _trainer(bench, state)
    trainer.train_step()
    trainer.save_state()
    torch.load(state, weights_only=True, map_location="cpu")  # only tensors and plain containers inside

    resumed = _trainer(bench, state)
    assert resumed.load_state() and resumed.step == 1
    for (name, a), b in zip(trainer.vlm.model.state_dict().items(), resumed.vlm.model.state_dict().values()):
        assert torch.equal(a, b), name

    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "payload": RunsCode(marker)}, state)
    with pytest.raises(pickle.UnpicklingError):
        _trainer(bench, state).load_state()
    assert not marker.exists()


# ---------------------------------------------------------------- --quiet
def test_quiet_silences_every_progress_bar_but_not_errors(tiny, small_bench, tmp_path, capfd, loud):
    """GA changes the weights, so the run also trains, checkpoints (save) and reloads nothing:
    the bars of our evaluation, of transformers' weight loading and of its checkpoint writing."""
    assert main(run_args(tiny["safe"], small_bench, tmp_path / "loud", "--method", "ga")) == 0
    err = capfd.readouterr().err
    assert any(mark in err for mark in BAR_MARKS)  # the control: bars do show without --quiet

    assert main(run_args(tiny["safe"], small_bench, tmp_path / "quiet", "--method", "ga", "--quiet")) == 0
    out, err = capfd.readouterr()
    assert not any(mark in err for mark in BAR_MARKS), err
    assert not any(mark in out for mark in BAR_MARKS) and out == ""  # --quiet: no summary table either

    assert main(run_args(tiny["safe"], tmp_path / "no-such-bench", tmp_path / "bad", "--quiet")) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmunlearn run: error: config '(root)'")
