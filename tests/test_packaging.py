"""What `pip install` gives a user: one `mmunlearn` namespace (no top-level `harness`, `tasks`,
`methods`, `stages` or `benchmarks` to collide with their own modules), the embedded assets, the console script and
the entry points through which the registries find the built-in plugins."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")  # a copy: setuptools builds inside the source folder
    for folder in ("harness", "tasks", "methods", "stages", "benchmarks"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, src / file)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("mmunlearn-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_one_namespace_with_every_layer(wheel):
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mmunlearn"}
    for module in (
        "harness/core/contracts.py",
        "harness/embedded/tiny_trainer.py",
        "harness/app/cli.py",
        "harness/app/commands/run.py",
        "tasks/cloze.py",
        "methods/manu.py",
        "stages/privacy.py",
        "benchmarks/clear.py",
        "benchmarks/mllmu_bench.py",
    ):
        assert f"mmunlearn/{module}" in names, module


def test_the_wheel_carries_the_embedded_bench_and_model(wheel):
    names = set(wheel.namelist())
    for asset in (
        "tiny-llava/model.safetensors",
        "tiny-llava/tokenizer.json",
        "tiny-llava-reference/model.safetensors",
        "minibench/Full_Set",
        "minibench/Holdout_Set",
        "mini-clear/forget05_perturbed",
    ):
        assert any(n.startswith(f"mmunlearn/harness/embedded/assets/{asset}") for n in names), asset


def test_the_wheel_declares_the_script_and_the_plugin_entry_points(wheel):
    (info,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(info).decode()
    assert "mmunlearn = mmunlearn.harness.app.cli:main" in text
    assert "[mmunlearn.methods]\nbuiltin = mmunlearn.methods" in text
    assert "[mmunlearn.tasks]\nbuiltin = mmunlearn.tasks" in text
    assert "[mmunlearn.stages]\nbuiltin = mmunlearn.stages" in text
    assert "[mmunlearn.benchmarks]\nbuiltin = mmunlearn.benchmarks" in text
