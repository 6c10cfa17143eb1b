"""`mmunlearn check`: the CI gate's exit codes and messages, on synthetic results files."""

import copy

import pytest

from mmunlearn.harness.app.cli import main
from mmunlearn.harness.core.results import write_results

BASE_METRICS = {
    s: {
        "classification": {m: {"accuracy": v, "n": 10} for m in ("image_text", "text_only")},
        "generation": {m: {"rougeL": v, "factuality": None, "n": 10} for m in ("image_text", "text_only")},
    }
    for s, v in (("forget", 0.30), ("test", 0.30), ("retain", 0.80), ("celebrity", 0.70))
}
MANIFEST = {"benchmark": {"fingerprint": "fp1", "source": "x"}, "forget": 5, "limit": None, "shots": 0}


def make_run(path, metrics=None, **manifest):
    write_results(path, metrics or BASE_METRICS, {**MANIFEST, **manifest})
    return str(path)


@pytest.fixture
def baseline(tmp_path):
    return make_run(tmp_path / "base")


def changed(set_name, task, mode, metric, value):
    m = copy.deepcopy(BASE_METRICS)
    m[set_name][task][mode][metric] = value
    return m


def test_pass_within_tolerance(tmp_path, baseline, capsys):
    run = make_run(tmp_path / "run", changed("forget", "classification", "text_only", "accuracy", 0.31))
    assert main(["check", run, "--baseline", baseline]) == 0
    out = capsys.readouterr().out
    assert "OK: 16 metrics compared, 0 regressions" in out


def test_fail_on_forget_rise(tmp_path, baseline, capsys):
    run = make_run(tmp_path / "run", changed("forget", "classification", "text_only", "accuracy", 0.40))
    assert main(["check", run, "--baseline", baseline]) == 1
    out = capsys.readouterr().out
    assert "forget/classification/text_only accuracy: 0.3000 -> 0.4000 (+0.1000; forgetting weaker" in out
    assert "FAIL" in out


def test_forget_drop_and_retain_rise_are_fine(tmp_path, baseline):
    m = changed("forget", "generation", "image_text", "rougeL", 0.0)
    m["retain"]["classification"]["image_text"]["accuracy"] = 1.0
    assert main(["check", make_run(tmp_path / "run", m), "--baseline", baseline]) == 0


def test_fail_on_retain_drop(tmp_path, baseline, capsys):
    run = make_run(tmp_path / "run", changed("celebrity", "generation", "image_text", "rougeL", 0.60))
    assert main(["check", run, "--baseline", baseline]) == 1
    assert (
        "celebrity/generation/image_text rougeL: 0.7000 -> 0.6000 (-0.1000; utility dropped" in capsys.readouterr().out
    )


def test_tolerance_flag(tmp_path, baseline):
    run = make_run(tmp_path / "run", changed("retain", "classification", "image_text", "accuracy", 0.75))
    assert main(["check", run, "--baseline", baseline]) == 1
    assert main(["check", run, "--baseline", baseline, "--tolerance", "0.1"]) == 0


def test_missing_cell_fails_but_unscored_is_skipped(tmp_path, baseline, capsys):
    m = copy.deepcopy(BASE_METRICS)
    del m["retain"]["generation"]
    assert main(["check", make_run(tmp_path / "run", m), "--baseline", baseline]) == 1
    assert "MISSING in run" in capsys.readouterr().out


def test_refuses_different_benchmark(tmp_path, baseline, capsys):
    run = make_run(tmp_path / "run", benchmark={"fingerprint": "other"})
    assert main(["check", run, "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert "different benchmark data" in err and "other" in err and "fp1" in err


def test_refuses_different_forget_split(tmp_path, baseline, capsys):
    run = make_run(tmp_path / "run", forget=10)
    assert main(["check", run, "--baseline", baseline]) == 2
    assert "different forget splits" in capsys.readouterr().err


def test_unfinished_or_missing_run_is_a_clear_error(tmp_path, baseline, capsys):
    assert main(["check", str(tmp_path / "nope"), "--baseline", baseline]) == 2
    assert "no results at" in capsys.readouterr().err


def test_config_differences_are_noted(tmp_path, baseline, capsys):
    run = make_run(tmp_path / "run", limit=5)
    assert main(["check", run, "--baseline", baseline]) == 0
    assert "note: limit differs: run 5, baseline None" in capsys.readouterr().out


def test_counts_are_not_regression_checked(tmp_path, baseline):
    b = copy.deepcopy(BASE_METRICS)
    b["forget"]["generation"]["text_only"]["factuality_failed"] = 0
    m = copy.deepcopy(b)
    m["forget"]["generation"]["text_only"]["factuality_failed"] = 7  # a count, not a score
    base = make_run(tmp_path / "b2", b)
    assert main(["check", make_run(tmp_path / "run", m), "--baseline", base]) == 0
