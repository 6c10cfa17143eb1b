"""harness/app/manifest.py: what a run records about the code that made it."""

from __future__ import annotations

import subprocess

import pytest

from mmunlearn.harness.app.manifest import git_commit


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "harness").mkdir()
    (tmp_path / "results" / "demo").mkdir(parents=True)
    (tmp_path / "harness" / "runner.py").write_text("x = 1\n")
    (tmp_path / "results" / "demo" / "results.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return tmp_path


def test_git_dirty_flags_code_changes_not_regenerated_results(checkout):
    package = checkout / "harness"  # the package asks from its own folder, as installed from a checkout
    commit, dirty = git_commit(package)
    assert len(commit) == 40 and dirty is False
    (checkout / "results" / "demo" / "results.json").unlink()  # `make reference` rewrites results/
    (checkout / "results" / "new.txt").write_text("untracked\n")
    assert git_commit(package) == (commit, False)
    (checkout / "harness" / "runner.py").write_text("x = 2\n")
    assert git_commit(package) == (commit, True)


def test_outside_git_there_is_no_commit(tmp_path):
    assert git_commit(tmp_path) == (None, None)
