"""runner.py: one run end to end with small fakes (fast), plus a real interrupted-and-resumed
subprocess on a tiny model (slow)."""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmunlearn.harness.app import runner
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.examples import plan_examples
from mmunlearn.harness.core.records import MODES, SETS, Question
from mmunlearn.harness.app.runner import RunConfig, run_benchmark
from mmunlearn.harness.core.contracts import SampleResult, Task


# ---------------------------------------------------------------- fakes
class FakeBench:
    fingerprint = "bench-fp"
    full_set: dict = {}  # no example profile is found: examples are drawn (and recorded) but none used

    def __init__(self, per_cell=5):
        self.profiles = {s: tuple(SimpleNamespace(id=f"p{i}") for i in range(3)) for s in SETS}
        self.qs = [
            Question(
                qid=f"{s}/p{i % 3}/{t}/{m}/{i}",
                set=s,
                task=t,
                mode=m,
                profile_id=f"p{i % 3}",
                text=f"q{i}",
                answer="A",
                image=b"img" if m == "image_text" else None,
            )
            for s in ("forget", "test", "retain", "celebrity")
            for t in ("classification", "cloze")
            for m in MODES
            for i in range(per_cell)
        ]

    def questions(self, sets, tasks, modes):
        return [q for q in self.qs if q.set in sets and q.task in tasks and q.mode in modes]

    def cells(self, set_name, question_type):
        return MODES  # MLLMU-Bench's layout: every set has every question type in both modes


class FakeModel:
    def eval(self):
        return self


class FakeVLM:
    prompt_style = "official"
    arch = "fake"

    def __init__(self, w=0.0, source="fake"):
        self.w, self.source, self.system_prompt, self.model = w, source, None, FakeModel()

    def weights_hash(self):
        return hashlib.sha256(repr(self.w).encode()).hexdigest()

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "fake.json").write_text(json.dumps({"w": self.w}))


def fake_load_vlm(source, device=None, dtype=None, **kw):
    Calls.load_vlm.append((str(source), dtype))
    p = Path(source) / "fake.json"
    return FakeVLM(json.loads(p.read_text())["w"], str(source)) if p.exists() else FakeVLM(0.0, str(source))


@dataclass
class Params:
    shift: float = 1.0


class Calls:
    apply = 0
    evaluated: list = []
    load_vlm: list = []  # (source, dtype) of every load
    load_benchmark: list = []  # keyword arguments of every load
    judge: list = []  # (model, keyword arguments) of every Judge.from_args
    fail_after = None  # raise KeyboardInterrupt after this many evaluate calls


class FakeMethod:
    name = "fake"
    Params = Params

    def apply(self, vlm, data, params, seed):
        Calls.apply += 1
        return SimpleNamespace(vlm=FakeVLM(vlm.w + params.shift), report={"shifted": params.shift}, system_prompt=None)


class FakeTask(Task):
    metrics = ("accuracy",)

    def __init__(self, name):
        self.name = name

    def question_type(self):  # one fake class stands for every task: it reads the questions of its name
        return self.name

    def evaluate(self, vlm, questions, ctx):
        if Calls.fail_after is not None and len(Calls.evaluated) >= Calls.fail_after:
            raise KeyboardInterrupt
        Calls.evaluated.append([q.qid for q in questions])
        out = []
        for q in questions:
            bit = int(hashlib.sha256(f"{q.qid}{vlm.w}".encode()).hexdigest(), 16) % 2
            out.append(SampleResult(q.qid, q.set, self.name, q.mode, q.profile_id, "h", "A", {"accuracy": float(bit)}))
        return out


class FakeJudge:
    available, model = False, None


def fake_load_benchmark(source, forget, **kw):
    Calls.load_benchmark.append(kw)
    return FakeBench()


def fake_judge(model, **kw):
    Calls.judge.append((model, kw))
    return FakeJudge()


@pytest.fixture
def fakes(monkeypatch):
    Calls.apply, Calls.evaluated, Calls.fail_after = 0, [], None
    Calls.load_vlm, Calls.load_benchmark, Calls.judge = [], [], []
    monkeypatch.setattr(runner, "load_benchmark", fake_load_benchmark)
    monkeypatch.setattr(runner, "load_vlm", fake_load_vlm)
    monkeypatch.setattr(runner, "get_method", lambda name: FakeMethod)
    monkeypatch.setattr(runner, "parse_params", lambda cls, raw: cls.Params(**{k: float(v) for k, v in raw.items()}))
    monkeypatch.setattr(runner, "UnlearnData", SimpleNamespace(from_benchmark=lambda bench: None))
    monkeypatch.setattr(runner, "get_task", FakeTask)
    monkeypatch.setattr(runner, "Judge", SimpleNamespace(from_args=fake_judge))
    return Calls


def cfg(**kw):
    base = dict(
        model="fake-model",
        bench="fake-bench",
        method="fake",
        tasks=("classification", "cloze"),
        batch_size=2,
        stages=(),
    )
    base.update(kw)
    return RunConfig(**base)


# ---------------------------------------------------------------- fast tests
def test_run_writes_metrics_gap_and_manifest(fakes, tmp_path):
    res = run_benchmark(cfg(params={"shift": "2"}), tmp_path / "r", progress=False)
    m = res["metrics"]
    assert set(m) == {"forget", "test", "retain", "celebrity"}
    cell = m["forget"]["classification"]
    assert set(cell) == set(MODES) and cell["image_text"]["n"] == 5
    assert 0.0 <= cell["image_text"]["accuracy"] <= 1.0
    assert res["modality_gap"]["forget"]["classification"]["accuracy"] == pytest.approx(
        cell["image_text"]["accuracy"] - cell["text_only"]["accuracy"]
    )
    man = res["manifest"]
    assert man["method"] == {**man["method"], "name": "fake", "params": {"shift": 2.0}, "report": {"shifted": 2.0}}
    assert man["benchmark"]["fingerprint"] == "bench-fp" and man["forget"] == 5
    assert man["model"]["weights_hash"] != man["model"]["unlearned_weights_hash"]
    assert man["judge"] is None and man["prompt_style"] == "official"
    assert {"load_benchmark", "load_model", "apply_method", "evaluate", "total"} <= set(man["wall_time_s"])
    assert {"torch", "transformers", "datasets", "peft"} <= set(man["packages"])
    assert "git_commit" in man and man["started"] <= man["finished"]
    lines = (tmp_path / "r" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2 * 2 * 5
    assert set(json.loads(lines[0])) >= {
        "qid",
        "set",
        "task",
        "mode",
        "profile_id",
        "prompt_hash",
        "response",
        "scores",
    }
    assert not (tmp_path / "r" / "model").exists()  # checkpoint is only a resume aid


def test_limit_caps_each_cell_deterministically(fakes, tmp_path):
    a = run_benchmark(cfg(limit=2, sets=("forget",)), tmp_path / "a", progress=False)
    run_benchmark(cfg(limit=2, sets=("forget",)), tmp_path / "b", progress=False)
    assert all(v["n"] == 2 for t in a["metrics"]["forget"].values() for v in t.values())
    read = lambda d: sorted(json.loads(x)["qid"] for x in (tmp_path / d / "samples.jsonl").read_text().splitlines())
    assert read("a") == read("b")


def test_interrupted_run_resumes_without_redoing_work(fakes, tmp_path):
    full = run_benchmark(cfg(dtype="float16"), tmp_path / "full", progress=False)
    fakes.apply, fakes.evaluated, fakes.fail_after = 0, [], 5
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg(dtype="float16"), tmp_path / "resumed", progress=False)
    done = len((tmp_path / "resumed" / "samples.jsonl").read_text().splitlines())
    assert 0 < done < 80 and (tmp_path / "resumed" / "model").is_dir()
    fakes.evaluated, fakes.fail_after, fakes.load_vlm = [], None, []
    res = run_benchmark(cfg(dtype="float16"), tmp_path / "resumed", progress=False)
    assert fakes.apply == 1  # the checkpointed unlearned model was reused, not retrained
    # the checkpoint is reloaded in the run's dtype (else its weights hash differs and it is retrained)
    assert fakes.load_vlm == [("fake-model", "float16"), (str(tmp_path / "resumed" / "model"), "float16")]
    redone = [q for chunk in fakes.evaluated for q in chunk]
    assert len(redone) == 80 - done and len(set(redone)) == len(redone)
    assert res["metrics"] == full["metrics"]
    assert res["manifest"]["resume"]["samples_reused"] == done
    assert res["manifest"]["method"]["checkpoint"]["reused"] is True


def test_method_without_weight_change_is_reapplied_on_resume(fakes, tmp_path):
    full = run_benchmark(cfg(params={"shift": "0"}), tmp_path / "full", progress=False)
    fakes.apply, fakes.evaluated, fakes.fail_after = 0, [], 3
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg(params={"shift": "0"}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "model").exists()  # nothing to checkpoint: weights unchanged
    fakes.fail_after = None
    res = run_benchmark(cfg(params={"shift": "0"}), tmp_path / "r", progress=False)
    assert fakes.apply == 2 and res["metrics"] == full["metrics"]
    assert res["manifest"]["method"]["weights_changed"] is False


def test_finished_run_is_not_recomputed(fakes, tmp_path):
    first = run_benchmark(cfg(), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "results.json").read_bytes()
    fakes.apply, fakes.evaluated = 0, []
    again = run_benchmark(cfg(), tmp_path / "r", progress=False)
    assert fakes.apply == 0 and fakes.evaluated == []
    assert again["metrics"] == first["metrics"]
    assert (tmp_path / "r" / "results.json").read_bytes() == before  # up to date: not rewritten


def test_different_config_in_same_dir_is_refused(fakes, tmp_path):
    run_benchmark(cfg(sets=("forget",)), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "results.json").read_bytes()
    with pytest.raises(ConfigError) as exc:
        run_benchmark(cfg(sets=("forget",), seed=3, params={"shift": "5"}), tmp_path / "r", progress=False)
    differing = [line.split(":")[0].strip() for line in str(exc.value).splitlines()[1:-1]]
    assert differing == ["params", "seed"]
    assert (tmp_path / "r" / "results.json").read_bytes() == before  # nothing computed is lost


def test_keep_model_keeps_checkpoint(fakes, tmp_path):
    res = run_benchmark(cfg(sets=("forget",), keep_model=True), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "model" / "fake.json").exists()
    assert res["manifest"]["method"]["checkpoint"]["kept"] is True


def test_bad_limit_is_a_config_error(fakes, tmp_path):
    with pytest.raises(ConfigError, match="--limit"):
        run_benchmark(cfg(limit=0), tmp_path / "r", progress=False)


def test_api_key_never_reaches_a_file(fakes, tmp_path, monkeypatch):
    secret = "sk-test-SECRET-do-not-write"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    run_benchmark(cfg(sets=("forget",)), tmp_path / "r", progress=False)
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="ignore"), path


def test_manifest_records_shots_examples_test_images_dtype_and_judge_protocol(fakes, tmp_path):
    man = run_benchmark(cfg(), tmp_path / "default", progress=False)["manifest"]
    assert (man["shots"], man["test_images"], man["config"]["dtype"]) == ("official", "random", "auto")
    assert man["judge_protocol"] is None and man["config"]["judge_protocol"] is None  # no judge scored
    bench, tasks = FakeBench(), ("classification", "cloze")
    assert man["examples"] == {
        s: {t: plan_examples(bench, s, t, "official", 0, "fake").record() for t in tasks} for s in SETS
    }
    assert [len(man["examples"]["retain"][t]["drawn"]) for t in tasks] == [1, 2]  # official counts
    assert man["examples"]["test"]["cloze"]["drawn"] != []
    assert fakes.load_benchmark == [
        {"test_images": "random", "seed": 0, "benchmark": "mllmu-bench", "protocol": "mllmu-bench", "options": {}}
    ]
    assert fakes.load_vlm == [("fake-model", "auto")]
    assert fakes.judge == [("auto", {"protocol": "official"})]  # the protocol picks its judge (gpt-4o-mini)

    fakes.load_benchmark, fakes.load_vlm, fakes.judge = [], [], []
    man = run_benchmark(
        cfg(shots=2, test_images="all", dtype="bfloat16", seed=4, judge_protocol="strict"),
        tmp_path / "custom",
        progress=False,
    )["manifest"]
    assert (man["shots"], man["test_images"], man["config"]["dtype"]) == (2, "all", "bfloat16")
    assert (
        man["examples"]["forget"]["classification"]
        == plan_examples(bench, "forget", "classification", 2, 4, "fake").record()
    )
    assert all(len(man["examples"][s][t]["drawn"]) == 2 for s in SETS for t in tasks)
    assert fakes.load_benchmark == [
        {"test_images": "all", "seed": 4, "benchmark": "mllmu-bench", "protocol": "mllmu-bench", "options": {}}
    ]
    assert fakes.load_vlm == [("fake-model", "bfloat16")]
    assert fakes.judge == [("auto", {"protocol": "strict"})]  # strict picks gpt-4o

    man = run_benchmark(cfg(shots=0), tmp_path / "zero", progress=False)["manifest"]
    assert man["shots"] == 0 and man["examples"] is None


def test_judge_protocol_is_recorded_when_a_judge_scores(fakes, tmp_path, monkeypatch):
    class Available:
        available, model, stats = True, "gpt-4o", {"calls": 0, "cache_hits": 0, "failures": 0}

    monkeypatch.setattr(runner, "Judge", SimpleNamespace(from_args=lambda model, **kw: Available()))
    man = run_benchmark(cfg(sets=("forget",), judge="gpt-4o", judge_protocol="strict"), tmp_path / "r", progress=False)[
        "manifest"
    ]
    assert (man["judge"], man["judge_protocol"], man["config"]["judge_protocol"]) == ("gpt-4o", "strict", "strict")


def test_protocol_settings_are_part_of_the_run_identity(fakes, tmp_path):
    run_benchmark(cfg(sets=("forget",)), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError) as exc:
        run_benchmark(
            cfg(sets=("forget",), shots=0, test_images="first", dtype="float32"), tmp_path / "r", progress=False
        )
    differing = [line.split(":")[0].strip() for line in str(exc.value).splitlines()[1:-1]]
    assert differing == ["dtype", "shots", "test_images"]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"shots": -1}, "shots must be >= 0"),
        ({"shots": "some"}, "shots"),
        ({"test_images": "each"}, "--test-images"),
        ({"dtype": "int8"}, "--dtype"),
        ({"judge_protocol": "loose"}, "--judge-protocol"),
    ],
)
def test_bad_protocol_settings_are_config_errors(fakes, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        run_benchmark(cfg(**kw), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "run.json").exists()


class PromptVLM:
    """Answers "A" to everything; its prompt is the official string (what the hash covers)."""

    prompt_style, arch, source = "official", "llava", "prompt-vlm"

    def __init__(self):
        self.system_prompt, self.model = None, FakeModel()

    def weights_hash(self):
        return "0" * 64

    def prompt(self, req):
        from mmunlearn.harness.core.prompts import official_prompt

        return official_prompt(req, system=req.system or self.system_prompt)

    def generate(self, reqs, max_new_tokens=50, batch_size=None, desc=None):
        return ["A"] * len(reqs)


def test_official_shots_change_the_prompt_hash_exactly_where_examples_are_prompted(small_bench, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "load_vlm", lambda source, device=None, dtype=None, **kw: PromptVLM())

    def run(shots, name):
        res = run_benchmark(
            RunConfig(
                model="m",
                bench=str(small_bench),
                forget=15,
                method="vanilla",
                shots=shots,
                judge=None,
                stages=(),
                tasks=("classification", "generation", "cloze"),  # PromptVLM generates; it scores no log-probs
            ),
            tmp_path / name,
            progress=False,
        )
        rows = map(json.loads, (tmp_path / name / "samples.jsonl").read_text().splitlines())
        return res, {r["qid"]: r for r in rows}

    _, zero = run(0, "zero")
    res, official = run("official", "official")
    assert zero.keys() == official.keys()
    for qid, z in zero.items():
        o = official[qid]
        prompted = (
            o["task"] == "classification"
            and o["set"] in ("forget", "test", "retain")
            or o["task"] == "cloze"
            and o["set"] != "celebrity"
        )  # celebrity IDs are not in Full_Set
        assert (o["prompt_hash"] != z["prompt_hash"]) == prompted, qid
    assert not any(z["extra"].get("excluded") for z in zero.values())
    examples = res["manifest"]["examples"]
    for s in SETS:
        for t in ("classification", "cloze", "generation"):
            excluded = {
                o["profile_id"]
                for o in official.values()
                if o["set"] == s and o["task"] == t and o["extra"].get("excluded")
            }
            assert excluded == set(examples[s][t]["used"]), (s, t)
            assert len(examples[s][t]["used"]) == {"classification": 1, "cloze": 2, "generation": 0}[t] * (
                s != "celebrity"
            )
    n = res["metrics"]["retain"]["cloze"]["text_only"]["n"]
    assert n == sum(
        1
        for o in official.values()
        if o["set"] == "retain" and o["task"] == "cloze" and o["mode"] == "text_only" and not o["extra"].get("excluded")
    )


# ---------------------------------------------------------------- CLI
def test_param_parsing_errors_name_the_argument():
    from mmunlearn.harness.app.commands.run import parse_param_args

    assert parse_param_args(["lr=1e-4", "functions=abs,var"]) == {"lr": "1e-4", "functions": "abs,var"}
    with pytest.raises(ConfigError, match="'lr': expected KEY=VALUE"):
        parse_param_args(["lr"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_param_args(["lr=1", "lr=2"])


def _parse(*extra):
    from mmunlearn.harness.app.cli import build_parser

    return build_parser().parse_args(["run", "--out", "r", *extra])


def test_cli_parses_shots_test_images_dtype_and_judge_protocol():
    from mmunlearn.harness.app.commands.run import config_from_args

    assert _parse().shots == "official" and _parse("--shots", "official").shots == "official"
    assert _parse("--shots", "0").shots == 0 and _parse("--shots", "2").shots == 2
    default = config_from_args(_parse())
    assert (default.shots, default.test_images, default.dtype, default.judge, default.judge_protocol) == (
        "official",
        "random",
        "auto",
        "auto",
        "official",
    )
    custom = config_from_args(
        _parse("--shots", "2", "--test-images", "all", "--dtype", "float16", "--judge-protocol", "strict")
    )
    assert (custom.shots, custom.test_images, custom.dtype, custom.judge_protocol) == (2, "all", "float16", "strict")


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--shots", "-1", "shots must be >= 0, got -1"),
        ("--shots", "foo", "shots must be 'official' or a number"),
        ("--test-images", "each", "invalid choice"),
        ("--dtype", "int8", "invalid choice"),
        ("--judge-protocol", "loose", "invalid choice"),
    ],
)
def test_cli_rejects_bad_protocol_flags_with_exit_2(flag, value, message, capsys, tmp_path):
    from mmunlearn.harness.app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err
    assert not (tmp_path / "r").exists()


def test_list_shows_methods_params_tasks_and_architectures(capsys):
    from mmunlearn.harness.app.cli import main

    assert main(["list", "--json"]) == 0
    cat = json.loads(capsys.readouterr().out)
    methods = {m["name"]: m for m in cat["methods"]}
    assert {"vanilla", "prompting", "ga", "grad_diff", "kl_min", "npo", "manu", "mmunlearner"} <= set(methods)
    alpha = next(p for p in methods["manu"]["params"] if p["name"] == "alpha")
    assert alpha["type"] == "float" and alpha["default"] == 0.02
    assert "rougeL" in next(t for t in cat["tasks"] if t["name"] == "generation")["metrics"]
    assert "llava" in [a["model_type"] for a in cat["architectures"]]
    assert main(["list"]) == 0
    assert "manu" in capsys.readouterr().out


def test_unknown_method_is_refused_before_loading(tmp_path, capsys):
    from mmunlearn.harness.app.cli import main

    assert main(["run", "--method", "nope", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "run.json").exists()


# ---------------------------------------------------------------- real model, real process (slow)
def _cli(out, *extra):
    import sys

    return [
        sys.executable,
        "-m",
        "mmunlearn.harness.app.cli",
        "run",
        "--model",
        str(out.parent / "tiny" / "llava"),
        "--method",
        "ga",
        "--sets",
        "forget",
        "retain",
        "--limit",
        "4",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "8",
        "--judge",
        "none",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_results(tmp_path):
    import signal
    import subprocess
    import time

    from tests.tiny_vlms import make_tiny_vlm

    make_tiny_vlm("llava", tmp_path / "tiny")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(full), cwd=root, env=env, check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_cli(killed), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = killed / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "results.json").exists() and (killed / "model").is_dir()
    done_before = {json.loads(x)["qid"] for x in samples.read_bytes().splitlines() if x.endswith(b"}")}

    subprocess.run(_cli(killed), cwd=root, env=env, check=True, capture_output=True, timeout=600)
    a = json.loads((full / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert b["metrics"] == a["metrics"] and b["modality_gap"] == a["modality_gap"]
    assert b["manifest"]["resume"]["samples_reused"] >= len(done_before) > 0
    assert b["manifest"]["method"]["checkpoint"]["reused"] is True  # GA was not re-trained
    assert b["manifest"]["model"]["unlearned_weights_hash"] == a["manifest"]["model"]["unlearned_weights_hash"]
    responses = lambda d: {
        r["qid"]: r["response"] for r in map(json.loads, (d / "samples.jsonl").read_text().splitlines())
    }  # noqa: E731
    assert responses(killed) == responses(full)
    assert not (killed / "model").exists()  # checkpoint removed once the run is complete


def test_second_process_on_same_dir_is_refused(fakes, tmp_path):
    import fcntl

    out = tmp_path / "r"
    out.mkdir()
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another mmunlearn process"):
            run_benchmark(cfg(), out, progress=False)
    run_benchmark(cfg(sets=("forget",)), out, progress=False)
    assert not (out / ".lock").exists()


def test_a_requested_cell_without_questions_is_a_clear_error(fakes, tmp_path):
    with pytest.raises(ConfigError, match="no generation questions in set 'forget', mode 'image_text'"):
        run_benchmark(cfg(tasks=("classification", "generation")), tmp_path / "r", progress=False)
    assert fakes.apply == 0 and not (tmp_path / "r" / "samples.jsonl").exists()  # refused before any work


def test_demo_runs_each_method_then_leaderboard_and_resumes(fakes, tmp_path, monkeypatch):
    from mmunlearn.harness.app.cli import main
    from mmunlearn.harness.app.commands import demo

    monkeypatch.setattr(demo, "DEMO_PARAMS", {"prompting": {"shift": "3"}})
    out = tmp_path / "demo"
    args = [
        "demo",
        "--methods",
        "prompting",
        "vanilla",
        "--sets",
        "forget",
        "retain",
        "--tasks",
        "classification",
        "cloze",
        "--stages",  # none: the fake benchmark has no profiles to hold out
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    for name in ("vanilla", "prompting"):
        assert (out / "runs" / name / "results.json").exists()
    man = json.loads((out / "runs" / "prompting" / "results.json").read_text())["manifest"]
    assert man["method"]["params"] == {"shift": 3.0} and man["limit"] == demo.DEMO_LIMIT and man["judge"] is None
    assert "| vanilla" in (out / "leaderboard.md").read_text()
    fakes.evaluated = []
    assert main(args) == 0 and fakes.evaluated == []  # everything read back


def test_default_judge_without_key_is_recorded_as_not_scoring(fakes, tmp_path, monkeypatch):
    from mmunlearn.harness.core import judge as judge_mod

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(runner, "Judge", judge_mod.Judge)
    res = run_benchmark(cfg(sets=("forget",), judge="gpt-4o"), tmp_path / "r", progress=False)
    assert res["manifest"]["judge"] is None and res["manifest"]["judge_requested"] == "gpt-4o"
    assert json.loads((tmp_path / "r" / "run.json").read_text())["config"]["judge"] is None


def test_without_tasks_a_run_scores_every_registered_task(fakes, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "registered_tasks", lambda: ("classification", "cloze"))
    res = run_benchmark(cfg(tasks=()), tmp_path / "r", progress=False)
    assert all(set(res["metrics"][s]) == {"classification", "cloze"} for s in res["metrics"])
    assert res["manifest"]["tasks"] == ["classification", "cloze"]
