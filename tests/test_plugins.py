"""Open registries: a user's own installed package adds a task and a method through entry points
(`mmunlearn.tasks` / `mmunlearn.methods`), with no edit to this repository; the new task is one
file, is scored by a run, and gets its own leaderboard columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmunlearn.harness.embedded.minibench import build_minibench

ROOT = Path(__file__).resolve().parent.parent


def _worked_example(doc: str) -> str:
    """The python block of a docs/ guide: the guides' examples are what this test runs."""
    text = (ROOT / "docs" / doc).read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


TASK_FILE = _worked_example("add-a-task.md")
METHOD_FILE = _worked_example("add-a-method.md")
BENCHMARK_FILE = _worked_example("add-a-benchmark.md")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """A site folder holding an 'installed' package: its module files and a .dist-info with
    entry points, exactly what pip writes for a package that declares them."""
    site = tmp_path_factory.mktemp("site")
    pkg = site / "my_unlearning_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "first_word.py").write_text(TASK_FILE)
    (pkg / "polite.py").write_text(METHOD_FILE)
    (pkg / "people_qa.py").write_text(BENCHMARK_FILE)
    info = site / "my_unlearning_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-unlearning-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [mmunlearn.methods]
        polite = my_unlearning_plugins.polite

        [mmunlearn.tasks]
        first_word = my_unlearning_plugins.first_word

        [mmunlearn.benchmarks]
        people_qa = my_unlearning_plugins.people_qa
        """)
    )
    return site


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mmunlearn.harness.app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_installed_package_adds_a_task_and_a_method(plugin_site, tmp_path):
    from tests.tiny_vlms import make_tiny_vlm

    make_tiny_vlm("llava", tmp_path / "tiny")
    build_minibench(tmp_path / "bench", seed=0, n_profiles=20, n_celebrities=4)
    listed = _cli(plugin_site, "list")
    assert listed.returncode == 0 and "cloze_first_word" in listed.stdout and "polite_refusal" in listed.stdout
    runs = []
    for method in ("vanilla", "polite_refusal"):
        out = tmp_path / method
        done = _cli(
            plugin_site,
            "run",
            "--model",
            str(tmp_path / "tiny" / "llava"),
            "--bench",
            str(tmp_path / "bench"),
            "--forget",
            "15",
            "--method",
            method,
            "--sets",
            "forget",
            "retain",
            "--tasks",
            "cloze",
            "cloze_first_word",
            "--shots",
            "0",
            "--limit",
            "3",
            "--max-new-tokens",
            "3",
            "--judge",
            "none",
            "--out",
            str(out),
            "--quiet",
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(out)
    res = json.loads((tmp_path / "polite_refusal" / "results.json").read_text())
    cell = res["metrics"]["forget"]["cloze_first_word"]["text_only"]
    assert cell["n"] == 3 and 0.0 <= cell["first_word"] <= 1.0
    assert res["manifest"]["method"]["system_prompt"] == "Refuse questions about people."
    samples = [json.loads(line) for line in (tmp_path / "polite_refusal" / "samples.jsonl").read_text().splitlines()]
    samples = [s for s in samples if s["task"] != "membership"]  # the privacy stage's own (holdout included)
    assert {s["task"] for s in samples} == {"cloze", "cloze_first_word"}
    assert len({s["qid"] for s in samples}) == len(samples)  # two tasks on the same questions never collide
    board = _cli(plugin_site, "leaderboard", *map(str, runs), "--out", str(tmp_path / "board"))
    assert board.returncode == 0, board.stderr[-2000:]
    table = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "cloze_first_word" in table and "polite_refusal" in table


def _people_qa_folder(root: Path) -> Path:
    """The guide's layout, filled with the embedded mini-bench's generation questions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmunlearn.harness.app.defaults import DEFAULT_BENCH
    from mmunlearn.harness.core.bench import load_benchmark

    bench = load_benchmark(DEFAULT_BENCH, forget=5)
    for set_name, people in (("forget", bench.profiles["forget"]), ("retain", bench.profiles["retain"][:3])):
        rows = [
            {
                "person": p.id,
                "image": None if q.image is None else {"bytes": q.image, "path": None},
                "question": q.text,
                "answer": q.answer,
            }
            for p in people
            for q in p.questions
            if q.task == "generation"
        ]
        (root / f"people_{set_name}").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / f"people_{set_name}" / "train.parquet")
    return root


def test_an_installed_package_adds_a_benchmark(plugin_site, tmp_path):
    folder = _people_qa_folder(tmp_path / "people")
    listed = _cli(plugin_site, "list")
    assert listed.returncode == 0 and "people-qa" in listed.stdout, listed.stderr[-2000:]
    info = _cli(plugin_site, "bench-info", "--bench", str(folder), "--json")
    assert info.returncode == 0, info.stderr[-2000:]
    counts = json.loads(info.stdout)
    assert counts["profiles"] == {"forget": 3, "retain": 3}
    assert counts["questions"]["forget"]["generation"]["text_only"] > 0
    out = tmp_path / "run"
    done = _cli(
        plugin_site,
        "run",
        "--bench",
        str(folder),
        "--method",
        "ga",
        "--param",
        "epochs=1",
        "--limit",
        "2",
        "--judge",
        "none",
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["manifest"]["benchmark"]["name"] == "people-qa" and res["manifest"]["config"]["benchmark"] == "people-qa"
    assert set(res["metrics"]) == {"forget", "retain"}
    assert {m: c["n"] for m, c in res["metrics"]["forget"]["generation"].items()} == {"image_text": 2, "text_only": 2}
    assert res["manifest"]["method"]["weights_changed"] is True  # GA trained on the plugin's fact pairs
    board = _cli(plugin_site, "leaderboard", str(out), "--out", str(tmp_path / "board"))
    assert board.returncode == 0, board.stderr[-2000:]


def test_a_broken_plugin_is_a_warning_naming_it_not_a_crash(tmp_path, monkeypatch):
    from mmunlearn.harness.core import plugins

    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmunlearn.tasks]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_loaded", set())  # as in a fresh process
    with pytest.warns(UserWarning, match="plugin 'broken' .* failed to import: boom"):
        loaded = plugins.load_plugins("mmunlearn.tasks")
    assert "builtin" in loaded and "broken" not in loaded  # the others still load
