"""Run-directory files: results.json, samples.jsonl, run.json; atomic writes; the resume store.

A run directory holds
  run.json       the configuration fingerprint, written when the run starts (resume guard)
  samples.jsonl  one line per evaluated question, appended chunk by chunk with fsync
  method.json    the method's report (so a finished method is never re-applied for nothing)
  model/         the unlearned model checkpoint (methods that change weights; removed at the end
                 unless kept)
  results.json   metrics, modality gap and manifest, written atomically at the end
The schema is documented in docs/results-schema.md. Everything here is plain JSON so other
tools (and `check` in CI) can read results without importing torch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

from mmunlearn.harness.core.errors import ConfigError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
METHOD_FILE = "method.json"
MODEL_DIR = "model"

# Which sets' (and modes') scores should fall is the run's objective: harness.core.objectives.

# Aggregates that count things (questions, judge calls) rather than score them: never ranked,
# gapped or regression-checked.
COUNT_METRICS = ("n",)
COUNT_SUFFIXES = ("_scored", "_failed", "_guessed", "_skipped")


def is_count_metric(name: str) -> bool:
    """A count, by its name or, for a per-group figure ("answers_guessed/Math"), its base name."""
    base = name.split("/", 1)[0]
    return base in COUNT_METRICS or base.endswith(COUNT_SUFFIXES)


SAMPLE_FIELDS = ("qid", "set", "task", "mode", "profile_id", "prompt_hash", "response", "scores", "extra")


# ---------------------------------------------------------------- JSON + atomic writes
def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, paths, numpy scalars -> plain JSON; NaN/inf -> None (JSON has no NaN)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return to_jsonable(obj.item())
    return str(obj)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file to write `path` through: a temp file in the same folder, fsynced and moved into
    place (os.replace) when the block ends, removed if it raises. Readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` atomically (atomic_file)."""
    with atomic_file(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, turning a missing or broken file into a ConfigError that names it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


# ---------------------------------------------------------------- samples.jsonl (resume store)
def sample_to_dict(sample: Any) -> dict:
    """A mmunlearn.harness.core.contracts.SampleResult (or a dict with the same fields) -> one samples.jsonl record."""
    data = asdict(sample) if is_dataclass(sample) and not isinstance(sample, type) else dict(sample)
    missing = [f for f in SAMPLE_FIELDS if f not in data and f != "extra"]
    if missing:
        raise ValueError(f"sample {data.get('qid', '?')!r} lacks fields {missing}")
    record = {f: data.get(f) for f in SAMPLE_FIELDS}
    record["extra"] = record["extra"] or {}
    return to_jsonable(record)


class SampleStore:
    """Append-only samples.jsonl keyed by qid; the unit of resume.

    Lines are appended a chunk at a time and fsync'ed, so after a kill at most the last,
    partially written line is lost; that tail is cut off when the store is opened, and its
    questions are simply evaluated again. A later line for the same qid wins.
    """

    def __init__(self, run_dir: str | os.PathLike, shard: int | None = None):
        """shard: this process's rank in a multi-process run (its own samples.rank<r>.jsonl)."""
        self.path = Path(run_dir) / (SAMPLES_FILE if shard is None else shard_file(shard))
        self.records: dict[str, dict] = {}
        self.skipped_lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # Torn write from an interrupted run: drop the incomplete tail so appends stay valid.
            keep = raw.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            raw = raw[:keep]
        for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                qid = rec["qid"]
            except (json.JSONDecodeError, KeyError, TypeError):
                self.skipped_lines += 1
                warnings.warn(f"{self.path}: line {lineno} is not a valid sample record; it will be re-evaluated")
                continue
            self.records[qid] = rec
        # Never rewrite the file here: a damaged line stays for inspection, nothing computed is lost.

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, qid: str) -> bool:
        return qid in self.records

    def get(self, qid: str) -> dict | None:
        return self.records.get(qid)

    def missing(self, qids: Iterable[str]) -> list[str]:
        return [q for q in qids if q not in self.records]

    def append(self, samples: Iterable[Any]) -> None:
        """Append completed samples durably (flush + fsync) and remember them."""
        records = [sample_to_dict(s) for s in samples]
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            # Disk full, permission lost, interrupt: cut what this call wrote, so the file holds
            # exactly the earlier samples (no torn line) and this chunk is simply redone on resume.
            try:
                os.truncate(self.path, size)
            except OSError:
                pass  # the torn tail, if any, is cut when the store is next opened
            raise
        for r in records:
            self.records[r["qid"]] = r


def shard_file(rank: int) -> str:
    return f"samples.rank{rank}.jsonl"


def merge_shards(run_dir: str | os.PathLike) -> int:
    """Append the records of every per-rank samples file to samples.jsonl (durably), then remove
    the per-rank files; returns how many records moved. Safe to repeat after a kill: a record
    appended twice is read back once (a later line for the same qid wins)."""
    run_dir = Path(run_dir)
    moved = 0
    main = SampleStore(run_dir)  # read once; each append below extends it
    for path in sorted(run_dir.glob("samples.rank*.jsonl")):
        shard = SampleStore(run_dir, shard=int(path.name[len("samples.rank") : -len(".jsonl")]))
        main.append(shard.records.values())
        moved += len(shard)
        path.unlink()
    return moved


# ---------------------------------------------------------------- run.json (config fingerprint)
def config_diff(stored: Mapping, requested: Mapping) -> list[str]:
    """Human-readable lines for each key whose value differs between two run configurations."""
    lines = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key, "<absent>"), requested.get(key, "<absent>")
        if to_jsonable(a) != to_jsonable(b):
            lines.append(f"{key}: stored {json.dumps(to_jsonable(a))} vs requested {json.dumps(to_jsonable(b))}")
    return lines


def claim_run_dir(run_dir: str | os.PathLike, config: Mapping) -> bool:
    """Write run.json for a new run, or verify an existing one matches. Returns True when resuming.

    A different configuration in the same directory would silently mix samples from two
    experiments, so it is refused with a ConfigError listing the keys that differ.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    config = to_jsonable(config)
    if path.exists():
        stored = read_json(path, "run configuration")
        stored_cfg = stored.get("config") if isinstance(stored, dict) else None
        if not isinstance(stored_cfg, dict):
            raise ConfigError(f"{path} has no 'config' object; is {run_dir} a mmunlearn run directory?")
        diff = config_diff(stored_cfg, config)
        if diff:
            raise ConfigError(
                f"{run_dir} already holds a run with a different configuration:\n  "
                + "\n  ".join(diff)
                + f"\nUse another --out directory, or delete {run_dir} to start over."
            )
        return True
    if run_dir.exists() and (run_dir / SAMPLES_FILE).exists():
        raise ConfigError(f"{run_dir} holds {SAMPLES_FILE} but no {RUN_FILE}; refusing to mix runs (use another --out)")
    atomic_write_json(path, {"schema_version": SCHEMA_VERSION, "config": config})
    return False


# ---------------------------------------------------------------- results.json
def modality_gap(metrics: Mapping) -> dict:
    """{set: {task: {metric: image_text - text_only}}} for every numeric metric both modes have."""
    gap: dict = {}
    for set_name, tasks in metrics.items():
        for task, modes in tasks.items():
            it, to = modes.get("image_text"), modes.get("text_only")
            if not isinstance(it, Mapping) or not isinstance(to, Mapping):
                continue
            row = {}
            for metric in it:
                if is_count_metric(metric) or metric not in to:
                    continue
                a, b = it[metric], to[metric]
                ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
                row[metric] = (a - b) if ok else None
            gap.setdefault(set_name, {})[task] = row
    return gap


def write_results(
    run_dir: str | os.PathLike, metrics: Mapping, manifest: Mapping, intervals: Mapping | None = None
) -> Path:
    """Atomically write results.json and return its path. `intervals` (harness.core.uncertainty):
    intervals[set][key][mode][metric] beside the figures; a file without them has no key."""
    path = Path(run_dir) / RESULTS_FILE
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "metrics": metrics, "modality_gap": modality_gap(metrics)}
    if intervals is not None:
        data["intervals"] = intervals
    data["manifest"] = manifest
    atomic_write_json(path, data)
    return path


def results_path(run: str | os.PathLike) -> Path:
    """Accept a run directory or a results.json path."""
    p = Path(run)
    return p / RESULTS_FILE if p.is_dir() else p


def load_results(run: str | os.PathLike) -> dict:
    """Read and shape-check a results.json (run directory or file path); errors name the file."""
    path = results_path(run)
    if not path.exists():
        hint = (
            " (the run has not finished; rerun it with the same arguments to resume)"
            if (path.parent / RUN_FILE).exists()
            else ""
        )
        raise ConfigError(f"no results at {path}{hint}")
    data = read_json(path, "results file")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("metrics"), dict)
        or not isinstance(data.get("manifest"), dict)
    ):
        raise ConfigError(f"{path} is not a mmunlearn results file (needs 'metrics' and 'manifest' objects)")
    for set_name, tasks in data["metrics"].items():
        if not isinstance(tasks, dict) or not all(
            isinstance(modes, dict) and all(isinstance(v, dict) for v in modes.values()) for modes in tasks.values()
        ):
            raise ConfigError(f"{path}: metrics[{set_name!r}] must map task -> mode -> {{metric: value}}")
    if not isinstance(data.get("intervals", {}), dict):
        raise ConfigError(f"{path}: 'intervals' must map set -> key -> mode -> {{metric: interval}}")
    data["_path"] = str(path)
    return data


def interval_of(results: Mapping, set_name: str, key: str, mode: str, metric: str) -> dict | None:
    """The interval stored beside metrics[set][key][mode][metric] ({value, se, lo, hi, ...}), or None:
    a results.json written before intervals existed, a figure that is None, a count, or one with no
    interval. An entry whose lo/hi are None says why in its `method` (a KS p-value is a test)."""
    found = (results.get("intervals") or {}).get(set_name, {}).get(key, {}).get(mode, {}).get(metric)
    return found if isinstance(found, dict) else None


def interval_bounds(results: Mapping, set_name: str, key: str, mode: str, metric: str) -> tuple[float, float] | None:
    """(lo, hi) of the interval beside a figure, or None where it has none (see interval_of)."""
    found = interval_of(results, set_name, key, mode, metric) or {}
    lo, hi = found.get("lo"), found.get("hi")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        return float(lo), float(hi)
    return None


def iter_metrics(metrics: Mapping, counts: bool = False):
    """Yield (set, task, mode, metric, value) for every score (counts such as "n" only if asked)."""
    for set_name, tasks in metrics.items():
        for task, modes in tasks.items():
            for mode, values in modes.items():
                for metric, value in values.items():
                    if counts or not is_count_metric(metric):
                        yield set_name, task, mode, metric, value
