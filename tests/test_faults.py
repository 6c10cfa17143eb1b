"""Faults while a run writes: a full disk or a permission error while appending samples, saving
the model checkpoint or writing results.json; a stale lock from a killed run; a samples.jsonl
torn by a kill. Each must leave the earlier files intact and the run resumable, and the resumed
run must end with the metrics of an uninterrupted one.

Runs are driven with the small fakes of tests/test_runner.py (fake benchmark, model, method and
task), so every scenario takes milliseconds; faults are injected by monkeypatching the writers.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mmunlearn.harness.core import results as results_mod
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.results import RESULTS_FILE, RUN_FILE, SAMPLES_FILE, SampleStore, atomic_write_json
from mmunlearn.harness.app.runner import run_benchmark
from tests.test_runner import FakeVLM, cfg, fakes  # noqa: F401  (fakes: the fixture)

ROOT = Path(__file__).resolve().parent.parent
N_SAMPLES = 4 * 2 * 2 * 5  # sets x tasks x modes x questions of the fake benchmark
SHIFT = {"shift": "2"}  # the fake method changes the weights: the model is checkpointed


def enospc(path="") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def eacces(path="") -> OSError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


@pytest.fixture
def uninterrupted(fakes, tmp_path):  # noqa: F811
    """The results of the same run without any fault (the reference)."""
    return run_benchmark(cfg(params=SHIFT), tmp_path / "reference", progress=False)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def assert_resumed_identically(out, reference, fakes, reused, applied=None):  # noqa: F811
    """Rerun without the fault: it finishes, with the metrics of the uninterrupted run."""
    res = run_benchmark(cfg(params=SHIFT), out, progress=False)
    assert res["metrics"] == reference["metrics"] and res["modality_gap"] == reference["modality_gap"]
    assert res["manifest"]["resume"]["samples_reused"] == reused
    assert json.loads((out / RESULTS_FILE).read_text())["metrics"] == reference["metrics"]
    assert len(SampleStore(out)) == N_SAMPLES
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp file or lock left
    if applied is not None:
        assert fakes.apply == applied
    return res


# ---------------------------------------------------------------- samples.jsonl
class TornFile:
    """A file whose write puts half the text on disk, then fails (disk full mid-write)."""

    def __init__(self, fh, error):
        self.fh, self.error = fh, error

    def write(self, text):
        self.fh.write(text[: len(text) // 2])
        self.fh.flush()
        raise self.error

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


class FaultyAppend:
    """`open` for mmunlearn.harness.core.results: the `fail_on`-th append to samples.jsonl fails with `error`,
    either at open (permission) or halfway through the write (disk full)."""

    def __init__(self, fail_on: int, error: OSError, torn: bool):
        self.fail_on, self.error, self.torn, self.appends = fail_on, error, torn, 0

    def __call__(self, file, mode="r", *args, **kwargs):
        if "a" in mode and Path(file).name == SAMPLES_FILE:
            self.appends += 1
            if self.appends == self.fail_on:
                if not self.torn:
                    raise self.error
                return TornFile(builtins.open(file, mode, *args, **kwargs), self.error)
        return builtins.open(file, mode, *args, **kwargs)


@pytest.mark.parametrize(
    "error,torn", [(enospc(), True), (eacces(), False)], ids=["disk-full-mid-write", "permission-denied"]
)
def test_fault_while_appending_samples_keeps_earlier_samples_and_resumes(
    fakes,  # noqa: F811  (the fixture)
    uninterrupted,
    tmp_path,
    monkeypatch,
    error,
    torn,
):
    out = tmp_path / "run"
    faulty = FaultyAppend(fail_on=3, error=error, torn=torn)
    monkeypatch.setattr(results_mod, "open", faulty, raising=False)
    fakes.apply = 0
    with pytest.raises(OSError) as exc:
        run_benchmark(cfg(params=SHIFT), out, progress=False)
    assert exc.value.errno == error.errno
    # The two batches appended before the fault are there, whole; nothing of the failed one.
    kept = lines(out / SAMPLES_FILE)
    assert len(kept) == 2 * 2 and all(line.endswith(b"\n") and json.loads(line)["qid"] for line in kept)
    assert not (out / RESULTS_FILE).exists() and json.loads((out / RUN_FILE).read_text())["config"]
    assert (out / "model").is_dir()  # the unlearned model was checkpointed before evaluation

    faulty.fail_on = None
    assert_resumed_identically(out, uninterrupted, fakes, reused=4, applied=1)  # checkpoint reused


def test_samples_store_append_failure_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    store = SampleStore(tmp_path)
    rec = {
        "qid": "q1",
        "set": "forget",
        "task": "cloze",
        "mode": "text_only",
        "profile_id": "p",
        "prompt_hash": "h",
        "response": "r",
        "scores": {"accuracy": 1.0},
        "extra": {},
    }
    store.append([rec])
    before = (tmp_path / SAMPLES_FILE).read_bytes()
    monkeypatch.setattr(results_mod, "open", FaultyAppend(1, enospc(), torn=True), raising=False)
    with pytest.raises(OSError):
        store.append([{**rec, "qid": f"q{i}"} for i in range(2, 50)])
    assert (tmp_path / SAMPLES_FILE).read_bytes() == before  # the half-written lines were cut
    assert list(store.records) == ["q1"]  # and are not counted as done


# ---------------------------------------------------------------- model checkpoint
def failing_save(self, path):
    """FakeVLM.save that runs out of disk after writing part of the checkpoint."""
    Path(path).mkdir(parents=True, exist_ok=True)
    (Path(path) / "fake.json").write_text('{"w": ')
    raise enospc(Path(path) / "fake.json")


@pytest.mark.parametrize("where", ["save", "metadata", "rename"])
def test_fault_while_checkpointing_the_model_leaves_a_resumable_run(
    fakes,  # noqa: F811  (the fixture)
    uninterrupted,
    tmp_path,
    monkeypatch,
    where,
):
    out = tmp_path / "run"
    real_replace, real_write, real_save = os.replace, results_mod.atomic_write_text, FakeVLM.save
    failed = []

    def once(error):
        if not failed:
            failed.append(error)
            raise error

    if where == "save":  # vlm.save itself (weights, processor)
        monkeypatch.setattr(FakeVLM, "save", failing_save)
    elif where == "metadata":  # checkpoint.json inside the checkpoint

        def write(path, text):
            if Path(path).name == "checkpoint.json":
                once(enospc(path))
            return real_write(path, text)

        monkeypatch.setattr(results_mod, "atomic_write_text", write)
    else:  # moving the finished checkpoint into place

        def replace(src, dst, *a, **kw):
            if Path(dst).name == "model":
                once(eacces(dst))
            return real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(os, "replace", replace)
    fakes.apply = 0
    with pytest.raises(OSError):
        run_benchmark(cfg(params=SHIFT), out, progress=False)
    assert not (out / "model").exists() and not (out / SAMPLES_FILE).exists() and not (out / RESULTS_FILE).exists()
    assert json.loads((out / RUN_FILE).read_text())["config"]  # the run's identity is intact
    monkeypatch.setattr(FakeVLM, "save", real_save)
    # The method is applied again (nothing usable was saved) and the run completes identically;
    # the half-written .model.tmp is cleared.
    assert_resumed_identically(out, uninterrupted, fakes, reused=0, applied=2)


# ---------------------------------------------------------------- results.json
def test_fault_while_writing_results_keeps_samples_and_the_rerun_only_writes(
    fakes,  # noqa: F811  (the fixture)
    uninterrupted,
    tmp_path,
    monkeypatch,
):
    out = tmp_path / "run"
    real_replace = os.replace
    fail = [True]

    def replace(src, dst, *a, **kw):
        if Path(dst).name == RESULTS_FILE and fail[0]:
            raise enospc(dst)
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    fakes.apply = 0
    with pytest.raises(OSError) as exc:
        run_benchmark(cfg(params=SHIFT), out, progress=False)
    assert exc.value.errno == errno.ENOSPC
    assert not (out / RESULTS_FILE).exists() and not list(out.glob(f".{RESULTS_FILE}.*"))  # no temp file left
    assert len(SampleStore(out)) == N_SAMPLES  # every answer is kept

    fail[0] = False
    fakes.evaluated = []
    assert_resumed_identically(out, uninterrupted, fakes, reused=N_SAMPLES, applied=1)
    assert fakes.evaluated == []  # nothing recomputed, only written


def test_failed_rewrite_of_results_keeps_the_previous_file(fakes, uninterrupted, tmp_path, monkeypatch):  # noqa: F811
    """A stale results.json (here: its metrics edited) is rewritten by a rerun; if that write
    fails, the previous file stays byte for byte."""
    out = tmp_path / "run"
    run_benchmark(cfg(params=SHIFT), out, progress=False)
    stale = json.loads((out / RESULTS_FILE).read_text())
    stale["metrics"]["forget"]["cloze"]["text_only"]["accuracy"] = 0.123
    (out / RESULTS_FILE).write_text(json.dumps(stale))
    before = (out / RESULTS_FILE).read_bytes()
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(enospc()))
    with pytest.raises(OSError):
        run_benchmark(cfg(params=SHIFT), out, progress=False)
    assert (out / RESULTS_FILE).read_bytes() == before
    assert not list(out.glob(f".{RESULTS_FILE}.*"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    res = run_benchmark(cfg(params=SHIFT), out, progress=False)
    assert res["metrics"] == uninterrupted["metrics"]


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, stage):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"old": True})
    before = path.read_bytes()
    if stage == "write":
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def write(self, text):
                self.fh.write(text[:3])
                raise enospc(path)

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        monkeypatch.setattr(os, "fdopen", lambda *a, **kw: Full(real_fdopen(*a, **kw)))
    elif stage == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(enospc(path)))
    else:
        monkeypatch.setattr(os, "replace", lambda *a, **kw: (_ for _ in ()).throw(eacces(path)))
    with pytest.raises(OSError):
        atomic_write_json(path, {"new": "x" * 10_000})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ---------------------------------------------------------------- torn / damaged samples.jsonl
def test_truncated_last_line_is_ignored_on_resume(fakes, uninterrupted, tmp_path):  # noqa: F811
    """A kill in the middle of a write leaves half a line: it is cut on resume, its batch redone."""
    out = tmp_path / "run"
    run_benchmark(cfg(params=SHIFT), out, progress=False)
    (out / RESULTS_FILE).unlink()
    kept = lines(out / SAMPLES_FILE)
    (out / SAMPLES_FILE).write_bytes(b"".join(kept[:-1]) + kept[-1][: len(kept[-1]) // 2])
    fakes.evaluated = []
    assert_resumed_identically(out, uninterrupted, fakes, reused=N_SAMPLES - 1)
    torn_qid = json.loads(kept[-1])["qid"]
    assert len(fakes.evaluated) == 1 and torn_qid in fakes.evaluated[0]  # only the torn line's batch
    assert all(line.endswith(b"\n") for line in lines(out / SAMPLES_FILE))


def test_damaged_line_in_the_middle_is_skipped_with_a_warning(fakes, uninterrupted, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    run_benchmark(cfg(params=SHIFT), out, progress=False)
    (out / RESULTS_FILE).unlink()
    kept = lines(out / SAMPLES_FILE)
    kept[5] = b"\xff\xfe{not json at all\n"
    (out / SAMPLES_FILE).write_bytes(b"".join(kept))
    with pytest.warns(UserWarning, match="line 6 is not a valid sample record"):
        assert_resumed_identically(out, uninterrupted, fakes, reused=N_SAMPLES - 1)


# ---------------------------------------------------------------- the run lock
def test_stale_lock_file_with_a_dead_pid_does_not_block(fakes, tmp_path):  # noqa: F811
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(dead)
    run_benchmark(cfg(), out, progress=False)
    assert (out / RESULTS_FILE).exists() and not (out / ".lock").exists()


def test_lock_of_a_live_process_refuses_and_of_a_killed_one_does_not(fakes, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom mmunlearn.harness.app.runner import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n"
            "    time.sleep(300)\n",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 120)
        assert ready and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"another mmunlearn process \(pid {holder.pid}\) is using"):
            run_benchmark(cfg(), out, progress=False)
        assert not (out / RUN_FILE).exists()  # refused before touching anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (out / ".lock").read_text() == str(holder.pid)  # killed: its lock file stays behind ...
    run_benchmark(cfg(), out, progress=False)  # ... and does not block the next run
    assert (out / RESULTS_FILE).exists() and not (out / ".lock").exists()


def test_cli_reports_an_environment_failure_in_one_line_with_its_own_exit_code(monkeypatch, capsys, tmp_path):
    from mmunlearn.harness.app import cli
    from mmunlearn.harness.app.commands import run as run_cmd

    def full_disk(args):
        raise enospc(tmp_path / "samples.jsonl")

    monkeypatch.setattr(run_cmd, "run", full_disk)
    assert cli.main(["run", "--out", str(tmp_path / "r"), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "rerun the same command" in err[0]
