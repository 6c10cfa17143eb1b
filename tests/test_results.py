"""results.py: atomic writes, the resume store survives torn writes, run.json guards configs."""

import json
import os

import pytest

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.results import (
    SampleStore,
    atomic_write_json,
    claim_run_dir,
    load_results,
    modality_gap,
    to_jsonable,
    write_results,
)


def _sample(qid, acc=1.0):
    return {
        "qid": qid,
        "set": "forget",
        "task": "classification",
        "mode": "image_text",
        "profile_id": "1",
        "prompt_hash": "h",
        "response": "A",
        "scores": {"accuracy": acc},
        "extra": {},
    }


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2, "nan": float("nan")})
    assert json.loads(path.read_text()) == {"a": 2, "nan": None}
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_store_round_trip_and_last_line_wins(tmp_path):
    store = SampleStore(tmp_path)
    store.append([_sample("q1", 0.0), _sample("q2")])
    store.append([_sample("q1", 1.0)])
    again = SampleStore(tmp_path)
    assert len(again) == 2 and again.get("q1")["scores"]["accuracy"] == 1.0
    assert again.missing(["q1", "q2", "q3"]) == ["q3"]


def test_store_drops_torn_tail_so_appends_stay_valid(tmp_path):
    store = SampleStore(tmp_path)
    store.append([_sample("q1"), _sample("q2")])
    with open(store.path, "a") as fh:
        fh.write('{"qid": "q3", "set": "for')  # killed mid-write
    again = SampleStore(tmp_path)
    assert sorted(again.records) == ["q1", "q2"]
    again.append([_sample("q3")])
    assert sorted(SampleStore(tmp_path).records) == ["q1", "q2", "q3"]


def test_store_keeps_corrupt_middle_line_and_warns(tmp_path):
    store = SampleStore(tmp_path)
    store.append([_sample("q1")])
    with open(store.path, "a") as fh:
        fh.write("garbage\n")
    store.append([_sample("q2")])
    with pytest.warns(UserWarning, match="line 2"):
        again = SampleStore(tmp_path)
    assert sorted(again.records) == ["q1", "q2"] and again.skipped_lines == 1
    assert "garbage" in store.path.read_text()  # nothing is thrown away


def test_claim_run_dir_refuses_different_config_naming_keys(tmp_path):
    assert claim_run_dir(tmp_path, {"method": "ga", "seed": 0, "forget": 5}) is False
    assert claim_run_dir(tmp_path, {"method": "ga", "seed": 0, "forget": 5}) is True
    with pytest.raises(ConfigError) as exc:
        claim_run_dir(tmp_path, {"method": "npo", "seed": 0, "forget": 10})
    msg = str(exc.value)
    assert "method" in msg and "forget" in msg and "seed" not in msg and "npo" in msg


def test_modality_gap_is_image_minus_text_and_skips_missing():
    metrics = {
        "forget": {
            "classification": {"image_text": {"accuracy": 0.75, "n": 4}, "text_only": {"accuracy": 0.25, "n": 4}}
        },
        "retain": {
            "generation": {
                "image_text": {"rougeL": 0.5, "factuality": None, "factuality_failed": 3, "n": 2},
                "text_only": {"rougeL": 0.5, "factuality": None, "factuality_failed": 0, "n": 2},
            }
        },
    }
    gap = modality_gap(metrics)
    assert gap["forget"]["classification"] == {"accuracy": 0.5}
    assert gap["retain"]["generation"] == {"rougeL": 0.0, "factuality": None}


def test_write_and_load_results(tmp_path):
    metrics = {"forget": {"cloze": {"image_text": {"accuracy": 1.0, "n": 1}, "text_only": {"accuracy": 0.0, "n": 1}}}}
    write_results(tmp_path, metrics, {"seed": 0})
    data = load_results(tmp_path)
    assert data["metrics"] == metrics and data["modality_gap"]["forget"]["cloze"]["accuracy"] == 1.0
    assert data["schema_version"] == 1


def test_load_results_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no results at"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ConfigError, match="results.json.*not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"metrics": {}}')
    with pytest.raises(ConfigError, match="manifest"):
        load_results(tmp_path)


def test_to_jsonable_handles_tuples_and_paths(tmp_path):
    assert to_jsonable({"a": (1, 2), "p": tmp_path, "inf": float("inf")}) == {
        "a": [1, 2],
        "p": str(tmp_path),
        "inf": None,
    }
