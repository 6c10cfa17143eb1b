"""The relearn and sweep stages end to end on a tiny random LLaVA and the small mini-bench: what
lands in results.json and the samples, recomputed by hand, and that watching training does not
change what is trained."""

from __future__ import annotations

import json

import pytest

from mmunlearn.harness.app.check import Gate, gate_only
from mmunlearn.harness.app.leaderboard import build_leaderboard
from mmunlearn.harness.app.runner import RunConfig, limit_questions, run_benchmark
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.contracts import SampleResult, get_task
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.robustness import recovery
from mmunlearn.stages.relearn import NO_ORIGINAL
from mmunlearn.stages.sweep import NO_STEPS

pytestmark = pytest.mark.slow
GA = {"lr": "5e-3", "epochs": "2", "batch_size": "2"}
RELEARN = dict(stages=("relearn",), tasks=("cloze", "generation"), relearn_params={"steps": "3", "lr": "1e-2"})
TASKS = ("classification", "generation", "cloze")


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_bench):
    from tests.tiny_vlms import make_tiny_vlm

    root = tmp_path_factory.mktemp("robustness")
    return {"model": str(make_tiny_vlm("llava", root / "tiny")), "bench": str(small_bench), "root": root}


def config(world, **kw):
    base = dict(
        model=world["model"],
        bench=world["bench"],
        forget=15,
        sets=("forget", "retain"),
        tasks=TASKS,
        limit=4,
        shots=0,
        max_new_tokens=4,
        judge=None,
        batch_size=4,
        method="ga",
        params=dict(GA),
        stages=(),
    )
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def swept(world):
    out = world["root"] / "swept"
    return out, run_benchmark(config(world, eval_every=2, sweep_limit=2), out, progress=False)


@pytest.fixture(scope="module")
def plain(world):
    out = world["root"] / "plain"
    return out, run_benchmark(config(world), out, progress=False)


def _samples(path):
    return [SampleResult.from_dict(json.loads(line)) for line in path.read_text().splitlines()]


def test_sweep_curve_has_a_point_every_n_steps_and_the_final_one(swept):
    _out, results = swept
    record = results["manifest"]["stages"]["sweep"]
    last = results["manifest"]["method"]["report"]["changed"]["steps"]
    assert record["last_step"] == last and last >= 4
    steps = [p["step"] for p in record["curve"]]
    expected = [*range(2, last + 1, 2)] + ([last] if last % 2 else [])  # every 2nd step, then the final one
    assert steps == expected
    assert record["curve"][-1].get("final") is True
    for point in record["curve"]:
        assert set(point["metrics"]) == {"forget", "retain"}
        assert set(point["collapse"]) == set(MODES)
        for s in ("forget", "retain"):
            assert set(point["metrics"][s]) == set(TASKS)


def test_watching_training_does_not_change_it_and_the_final_point_equals_a_normal_run(swept, plain, world):
    _out, sweep_results = swept
    plain_out, plain_results = plain
    assert (
        sweep_results["manifest"]["model"]["unlearned_weights_hash"]
        == (plain_results["manifest"]["model"]["unlearned_weights_hash"])
    )
    assert sweep_results["metrics"]["forget"]["cloze"] == plain_results["metrics"]["forget"]["cloze"]
    final = sweep_results["manifest"]["stages"]["sweep"]["curve"][-1]["metrics"]
    bench = load_benchmark(world["bench"], 15)
    by_id = {r.qid: r for r in _samples(plain_out / "samples.jsonl")}
    for s in ("forget", "retain"):
        for t in TASKS:
            task = get_task(t)
            for m in MODES:
                subset = limit_questions(bench.questions(sets=[s], tasks=[t], modes=[m]), 2)
                expected = task.aggregate([by_id[task.sample_id(q)] for q in subset])
                for metric, value in final[s][t][m].items():
                    assert value == pytest.approx(expected[metric]), (s, t, m, metric)


def test_collapse_metrics_follow_the_curve(swept):
    _out, results = swept
    curve = results["manifest"]["stages"]["sweep"]["curve"]
    for m in MODES:
        cell = results["metrics"]["retain"]["collapse"][m]
        flagged = [p["step"] for p in curve if p["collapse"][m]["collapsed"]]
        assert cell["first_collapse_step"] == (flagged[0] if flagged else None)
        assert cell["collapsed"] == float(bool(flagged))
        assert cell["checkpoints_scored"] == len(curve)
        assert cell["final_degenerate_share"] == curve[-1]["collapse"][m]["degenerate_share"]


def test_a_method_without_training_steps_says_the_sweep_is_not_available(world):
    results = run_benchmark(
        config(world, method="vanilla", params={}, eval_every=2, tasks=("cloze",)),
        world["root"] / "vanilla-sweep",
        progress=False,
    )
    for m in MODES:
        cell = results["metrics"]["retain"]["collapse"][m]
        assert cell["first_collapse_step"] is None and cell["note"] == NO_STEPS


@pytest.fixture(scope="module")
def relearned(world):
    out = world["root"] / "relearned"
    return out, run_benchmark(config(world, keep_model=True, **RELEARN), out, progress=False)


def test_relearn_folds_are_recorded_disjoint_and_cover_the_forget_profiles(relearned, world):
    _out, results = relearned
    record = results["manifest"]["stages"]["relearn"]
    folds = record["folds"]
    bench = load_benchmark(world["bench"], 15)
    assert sorted(p for f in folds for p in f) == sorted(p.id for p in bench.profiles["forget"])
    assert len(folds) == 2 and not set(folds[0]) & set(folds[1])
    assert results["manifest"]["config"]["relearn_params"]["steps"] == 3
    for name in ("attack-text_only", "attack-image_text", "control-text_only", "control-image_text"):
        assert [a["held_out"] for a in record["attacks"][name]] == folds
        assert all(a["steps"] == 3 for a in record["attacks"][name])


def test_relearn_cells_recompute_from_the_attack_samples(relearned):
    out, results = relearned
    forget = results["metrics"]["forget"]
    originals = {r.qid: r for r in _samples(out / "relearn" / "original" / "samples.jsonl")}
    mine = {r.qid: r for r in _samples(out / "samples.jsonl")}
    for m in MODES:
        cell = forget["relearn_cloze"][m]
        held = [r for r in mine.values() if r.set == "forget" and r.task == "cloze" and r.mode == m]
        assert cell["unlearned"] == pytest.approx(sum(r.scores["accuracy"] for r in held) / len(held))
        assert cell["original"] == pytest.approx(sum(originals[r.qid].scores["accuracy"] for r in held) / len(held))
        folds = results["manifest"]["stages"]["relearn"]["folds"]
        for r_mode in MODES:
            attacked = [
                (k, a)
                for k in (0, 1)
                for a in _samples(out / "relearn" / f"attack-{r_mode}-fold{k}" / "samples.jsonl")
                if a.task == "cloze" and a.mode == m
            ]
            held_out = [a for k, a in attacked if a.profile_id in folds[k]]
            trained = [a for k, a in attacked if a.profile_id not in folds[k]]
            assert sorted(a.qid for a in held_out) == sorted(r.qid for r in held)  # each question once
            assert sorted(a.qid for a in trained) == sorted(r.qid for r in held)  # and once trained on
            for figure, answers in (("relearned", held_out), ("trained", trained)):
                score = sum(a.scores["accuracy"] for a in answers) / len(answers)
                expected = recovery(cell["original"], cell["unlearned"], score)
                assert cell[f"{figure}_from_{r_mode}"] == pytest.approx(score)
                prefix = "" if figure == "relearned" else "trained_"
                assert cell[f"{prefix}recovery_from_{r_mode}"] == (
                    None if expected is None else pytest.approx(expected)
                )


def test_relearn_resumes_without_retraining(relearned, world, monkeypatch):
    out, results = relearned

    def no_training(*args, **kwargs):
        raise AssertionError("an attack whose answers are all stored was trained again")

    monkeypatch.setattr("mmunlearn.stages.relearn.attack", no_training)
    (out / "results.json").unlink()  # the stage runs again from its stored samples
    cfg = config(world, keep_model=True, **RELEARN)  # as the fixture ran it
    again = run_benchmark(cfg, out, progress=False)
    assert again["metrics"] == results["metrics"]
    assert all(a.get("reused") for runs in again["manifest"]["stages"]["relearn"]["attacks"].values() for a in runs)


def test_the_attack_on_an_external_checkpoint_equals_the_attack_in_the_run_that_made_it(relearned, world):
    """The user story: a checkpoint unlearned elsewhere, scored by path with --base-model, gets the
    same relearning figures as the run that unlearned it (the attack needs only model and data)."""
    out, results = relearned
    external = run_benchmark(
        config(world, method="vanilla", params={}, model=str(out / "model"), base_model=world["model"], **RELEARN),
        world["root"] / "external-relearn",
        progress=False,
    )
    assert external["manifest"]["model"]["weights_hash"] == results["manifest"]["model"]["unlearned_weights_hash"]
    assert external["manifest"]["stages"]["relearn"]["folds"] == results["manifest"]["stages"]["relearn"]["folds"]
    for task in ("relearn_cloze", "relearn_generation"):
        assert external["metrics"]["forget"][task] == results["metrics"]["forget"][task]
    cells = [external["metrics"]["forget"][t][m] for t in ("relearn_cloze", "relearn_generation") for m in MODES]
    assert all(c["original"] is not None and c.get("note") != NO_ORIGINAL for c in cells)  # the base was scored


def test_an_external_checkpoint_without_base_has_no_original(world):
    results = run_benchmark(
        config(world, method="vanilla", params={}, stages=("relearn",), tasks=("cloze",)),
        world["root"] / "vanilla-relearn",
        progress=False,
    )
    for m in MODES:
        cell = results["metrics"]["forget"]["relearn_cloze"][m]
        assert cell["recovery_from_text_only"] is None and cell["note"] == NO_ORIGINAL


def test_recovery_and_collapse_reach_the_leaderboard_and_check(relearned, swept, tmp_path):
    files = build_leaderboard([relearned[0], swept[0]], tmp_path / "board")
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "Relearning" in md and "Checkpoint sweep" in md
    assert "relearn.png" in {p.split("/")[-1] for p in map(str, files.values())}
    assert "sweep.png" in {p.split("/")[-1] for p in map(str, files.values())}
    key = "forget.relearn_cloze.image_text.relearned_from_text_only"
    value = relearned[1]["metrics"]["forget"]["relearn_cloze"]["image_text"]["relearned_from_text_only"]
    assert not gate_only(relearned[0], [Gate.parse("max", f"{key}={value + 0.01}")]).failed
    assert gate_only(relearned[0], [Gate.parse("max", f"{key}={value - 0.01}")]).failed
    share = swept[1]["metrics"]["retain"]["collapse"]["text_only"]["final_degenerate_share"]
    assert gate_only(
        swept[0], [Gate.parse("max", f"retain.collapse.text_only.final_degenerate_share={share - 0.01}")]
    ).failed


def test_bad_robustness_settings_fail_before_any_work(world, tmp_path):
    with pytest.raises(ConfigError, match="relearn.*steps"):
        run_benchmark(config(world, stages=("relearn",), relearn_params={"steps": "0"}), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="unknown parameter 'speed'"):
        run_benchmark(config(world, stages=("relearn",), relearn_params={"speed": "1"}), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="needs --eval-every"):
        run_benchmark(config(world, stages=("sweep",)), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="--eval-every must be >= 1"):
        run_benchmark(config(world, eval_every=0), tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="--select best needs --eval-every"):
        run_benchmark(config(world, select="best"), tmp_path / "e", progress=False)
    with pytest.raises(ConfigError, match="--select must be one of final, best"):
        run_benchmark(config(world, eval_every=2, select="top"), tmp_path / "f", progress=False)
    assert not any((tmp_path / n / "results.json").exists() for n in "abcdef")


def test_select_best_is_refused_under_several_processes(world, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # only read, no process group is started before the refusal
    with pytest.raises(ConfigError, match="one process only"):
        run_benchmark(config(world, eval_every=2, select="best"), tmp_path / "g", progress=False)


FULL = {**GA, "finetune": "full"}  # restoring full weights is exact: the selected answers must match


@pytest.fixture(scope="module")
def selected(world):
    out = world["root"] / "selected"
    return out, run_benchmark(
        config(world, params=FULL, eval_every=2, sweep_limit=2, select="best"), out, progress=False
    )


def _headline(cell: dict):
    return next((v for v in cell.values() if v is not None), None)


def test_select_best_keeps_the_checkpoint_its_rule_chooses(selected, world):
    out, results = selected
    record = results["manifest"]["stages"]["sweep"]
    chosen, last = record["selected"]["step"], record["last_step"]
    bench = load_benchmark(world["bench"], 15)
    by_hand = {}
    for point in record["curve"]:
        step = point["step"]
        live = {r.qid: r for r in _samples(out / "sweep" / f"step-{step:06d}" / "samples.jsonl")}
        worst = None
        for m in MODES:
            gaps = []
            for t in TASKS:
                cell = {}
                for s in ("forget", "retain"):
                    qs = limit_questions(bench.questions(sets=[s], tasks=[t], modes=[m]), 2)
                    agg = get_task(t).aggregate([live[q.qid] for q in qs])
                    cell[s] = _headline({k: agg[k] for k in get_task(t).headline_metrics() if k in agg})
                gaps.append(cell["retain"] - cell["forget"])
            worst = min(worst, sum(gaps) / len(gaps)) if worst is not None else sum(gaps) / len(gaps)
        by_hand[step] = worst
        assert record["selected"]["tradeoff"][str(step)] == pytest.approx(worst), step
    eligible = [p["step"] for p in record["curve"] if not any(p["collapse"][m]["collapsed"] for m in MODES)]
    best = max(by_hand[s] for s in eligible)
    assert chosen == min(s for s in eligible if by_hand[s] == pytest.approx(best))
    assert chosen < last, (
        "on this tiny model GA's best checkpoint comes before its last step (else nothing is restored)"
    )
    assert [p["step"] for p in record["curve"] if p.get("output")] == [chosen]


def test_the_selected_run_answers_as_its_checkpoint_did_and_is_not_the_final_model(selected, world):
    out, results = selected
    chosen = results["manifest"]["stages"]["sweep"]["selected"]["step"]
    live = _samples(out / "sweep" / f"step-{chosen:06d}" / "samples.jsonl")
    own = {(r.qid, r.task): r for r in _samples(out / "samples.jsonl")}
    assert live
    for r in live:
        assert own[r.qid, r.task].response == r.response, r.qid
    # the same run with --select final: only the choice differs, so the hashes tell the two apart
    final = run_benchmark(
        config(world, params=FULL, eval_every=2, sweep_limit=2), world["root"] / "full-final", progress=False
    )
    hashes = (
        results["manifest"]["model"]["unlearned_weights_hash"],
        final["manifest"]["model"]["unlearned_weights_hash"],
    )
    assert hashes[0] != hashes[1]
    assert results["manifest"]["config_hash"] != final["manifest"]["config_hash"]


def test_a_selected_run_is_labelled_with_its_step_on_the_leaderboard(selected, tmp_path):
    build_leaderboard([selected[0]], tmp_path / "board")
    chosen = selected[1]["manifest"]["stages"]["sweep"]["selected"]["step"]
    assert f"[best checkpoint: step {chosen}]" in (tmp_path / "board" / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    "method, params",
    [("ga", GA), ("mmunlearner", {"lr": "1e-2", "batch_size": "2"})],
    ids=["ga-lora", "mmunlearner"],
)
def test_select_best_puts_back_lora_adapters_and_mmunlearners_tower_weights(world, tmp_path, method, params):
    """LoRA: the adapters are restored before the merge; MMUnlearner: its trained tower weights.
    Free answers only: the random model's letters are unparseable, so with multiple choice every
    checkpoint would count as collapsed and none could be selected."""
    out = tmp_path / method
    cfg = config(
        world, method=method, params=params, tasks=("generation", "cloze"), eval_every=2, sweep_limit=2, select="best"
    )
    results = run_benchmark(cfg, out, progress=False)
    sweep = results["manifest"]["stages"]["sweep"]
    chosen, last = sweep["selected"]["step"], sweep["last_step"]
    assert chosen is not None and chosen < last  # else nothing was restored
    live = _samples(out / "sweep" / f"step-{chosen:06d}" / "samples.jsonl")
    at_last = {(r.qid, r.task): r.response for r in _samples(out / "sweep" / f"step-{last:06d}" / "samples.jsonl")}
    own = {(r.qid, r.task): r.response for r in _samples(out / "samples.jsonl")}
    assert [own[r.qid, r.task] for r in live] == [r.response for r in live]
    assert any(at_last[r.qid, r.task] != r.response for r in live)  # the last step answered otherwise
