"""One run = load benchmark + model, apply the unlearning method, evaluate every task on every
requested set in both modes, write results.json.

Runs are resumable: samples are appended to samples.jsonl a chunk at a time, a rerun with the
same configuration reads them back and evaluates only what is missing, and an unlearned model
that changed weights is checkpointed to DIR/model/ so the method is not re-trained. Chunks
are fixed slices of each (set, task, mode) question list and are evaluated whole, so batches
(and hence numerics) are the same whether or not a run was interrupted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import defaults
from harness.bench import TEST_IMAGE_CHOICES, load_benchmark
from harness.errors import ConfigError
from harness.examples import OFFICIAL, parse_shots, plan_examples
from harness.judge import DEFAULT_PROTOCOL, JUDGE_PROTOCOLS, Judge
from harness.model import load_vlm
from harness.records import MODES, SETS, TASKS
from harness.seeding import chunks, seed_everything
from harness.results import (
    METHOD_FILE,
    MODEL_DIR,
    RESULTS_FILE,
    SampleStore,
    atomic_write_json,
    claim_run_dir,
    read_json,
    to_jsonable,
    write_results,
)
from methods import get_method, parse_params
from methods.base import UnlearnData
from tasks import get_task
from tasks.base import SampleResult, TaskContext

CHUNK_SIZE = 16  # questions per resumable unit; fixed so batch composition never depends on resume
PACKAGES = ("torch", "transformers", "datasets", "peft", "accelerate", "rouge-score", "openai",
            "numpy", "pandas", "pyarrow", "pillow", "mmunlearn")
CHECKPOINT_META = "checkpoint.json"


@dataclass
class RunConfig:
    """Everything the user chooses for one run (CLI flags map onto these one to one)."""

    model: str = str(defaults.DEFAULT_MODEL)
    bench: str = str(defaults.DEFAULT_BENCH)
    forget: int = 5
    method: str = "vanilla"
    params: dict[str, str] = field(default_factory=dict)  # raw --param k=v strings
    seed: int = defaults.DEFAULT_SEED
    shots: int | str = OFFICIAL  # "official" in-context examples, or N example profiles (0: zero-shot)
    test_images: str = "random"  # one transformed image per test profile and task, seeded (official)
    sets: tuple[str, ...] = SETS
    tasks: tuple[str, ...] = TASKS
    limit: int | None = None
    judge: str | None = "auto"  # the judge protocol's own model
    judge_protocol: str = DEFAULT_PROTOCOL
    dtype: str = "auto"
    batch_size: int | None = None
    max_new_tokens: int = 50
    scorers: tuple[str, ...] = ("generate",)
    keep_model: bool = False
    device: str | None = None
    trust_remote_code: bool = False  # run a checkpoint's own Python code (recorded in the manifest)
    allow_pickle_weights: bool = False  # load .bin pickle weights (they can run code)
    chunk_size: int = CHUNK_SIZE  # questions per resumable unit (performance knob, not a result key)

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        self.shots = parse_shots(self.shots)
        if self.test_images not in TEST_IMAGE_CHOICES:
            raise ConfigError(f"--test-images must be one of {', '.join(TEST_IMAGE_CHOICES)}, got {self.test_images!r}")
        if self.dtype not in defaults.DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(defaults.DTYPES)}, got {self.dtype!r}")
        if self.judge_protocol not in JUDGE_PROTOCOLS:
            raise ConfigError(f"--judge-protocol must be one of {', '.join(JUDGE_PROTOCOLS)}, "
                              f"got {self.judge_protocol!r}")
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        for s in self.sets:
            if s not in SETS:
                raise ConfigError(f"unknown set {s!r}; sets: {', '.join(SETS)}")
        if not self.sets or not self.tasks:
            raise ConfigError("at least one set and one task are needed")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def display_source(source: str | os.PathLike) -> str:
    """How a model/benchmark source is recorded: the embedded assets by name (so committed
    results do not carry this machine's paths), local paths absolute, hub ids verbatim."""
    p = Path(source)
    if p.exists():
        p = p.resolve()
        try:
            return f"embedded:{p.relative_to(defaults.ASSETS.resolve()).as_posix()}"
        except ValueError:
            return str(p)
    return str(source)


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, working tree dirty?) of the checkout this package runs from; (None, None) outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def limit_questions(questions: list, limit: int | None) -> list:
    """At most `limit` questions, chosen by a hash of the qid (spread over profiles, the same
    for every method and seed), kept in benchmark order."""
    if limit is None or len(questions) <= limit:
        return list(questions)
    keep = {q.qid for q in sorted(questions, key=lambda q: hashlib.sha256(q.qid.encode()).hexdigest())[:limit]}
    return [q for q in questions if q.qid in keep]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(config), sort_keys=True).encode()).hexdigest()


class Progress:
    """Stage messages and tqdm bars on stderr; silent when disabled (tests)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"[mmunlearn] {msg}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        from harness.progress import progress_bar

        return progress_bar(total=total, desc=desc, unit="q", disable=not self.enabled, file=sys.stderr, leave=True)


@contextlib.contextmanager
def run_lock(out: Path):
    """Refuse a second process on the same run directory (it would interleave samples)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    path = out / ".lock"
    fh = open(path, "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ConfigError(f"another mmunlearn process is using {out}") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()  # leave no stray file in (committed) run directories
    finally:
        fh.close()


class Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - t, 3)


# ---------------------------------------------------------------- method application / checkpoint
def _apply_or_restore(cfg, out: Path, vlm, bench, method_cls, params, fingerprint_hash, base_hash, progress, timer):
    """Return (vlm, method_info). Reuses DIR/model/ when it holds this configuration's unlearned
    weights; otherwise applies the method (seeded) and checkpoints it if weights changed."""
    ckpt_dir = out / MODEL_DIR
    meta_path = ckpt_dir / CHECKPOINT_META
    if meta_path.exists():
        meta = read_json(meta_path, "model checkpoint metadata")
        if meta.get("config_hash") == fingerprint_hash:
            progress.say(f"reusing the unlearned model checkpoint in {ckpt_dir}")
            with timer("load_checkpoint"):
                restored = load_vlm(str(ckpt_dir), device=cfg.device, dtype=cfg.dtype)
                restored_hash = restored.weights_hash()
            if restored_hash == meta.get("weights_hash"):
                restored.system_prompt = meta.get("system_prompt")
                info = dict(meta["method_info"])
                info["checkpoint"] = {**info.get("checkpoint", {}), "reused": True}
                return restored, info
            warnings.warn(f"{ckpt_dir} does not reload to the weights it was saved with; re-applying the method")

    progress.say(f"applying method {cfg.method} ...")
    seed_everything(cfg.seed)
    data = UnlearnData.from_benchmark(bench)
    t = time.perf_counter()
    vlm, report = method_cls().apply(vlm, data, params, cfg.seed)
    apply_s = round(time.perf_counter() - t, 3)
    timer.stages["apply_method"] = apply_s
    with contextlib.suppress(Exception):
        vlm.model.eval()
    with timer("hash_weights"):
        new_hash = vlm.weights_hash()
    info = {
        "report": report or {},
        "apply_seconds": apply_s,
        "weights_hash": new_hash,
        "weights_changed": new_hash != base_hash,
        "system_prompt": getattr(vlm, "system_prompt", None),
        "checkpoint": {"saved": False, "reused": False, "path": None},
    }
    if new_hash != base_hash:
        progress.say(f"checkpointing the unlearned model into {ckpt_dir}")
        with timer("save_checkpoint"):
            tmp = out / f".{MODEL_DIR}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            vlm.save(tmp)
            info["checkpoint"] = {"saved": True, "reused": False, "path": MODEL_DIR}
            atomic_write_json(tmp / CHECKPOINT_META, {
                "config_hash": fingerprint_hash, "weights_hash": new_hash,
                "system_prompt": info["system_prompt"], "method_info": info,
            })
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            os.replace(tmp, ckpt_dir)
    atomic_write_json(out / METHOD_FILE, {"config_hash": fingerprint_hash, "method_info": info})
    return vlm, info


# ---------------------------------------------------------------- the run
def run_benchmark(cfg: RunConfig, out: str | os.PathLike, progress: bool = True) -> dict:
    """Execute (or resume) one run into `out`; returns the results dict also written to results.json."""
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = Progress(progress)
    timer = Timer()
    started = now_iso()
    t_start = time.perf_counter()

    # Validate cheap things before loading anything heavy.
    method_cls = get_method(cfg.method)
    params = parse_params(method_cls, dict(cfg.params))
    tasks = {name: get_task(name) for name in cfg.tasks}
    judge = Judge.from_args(cfg.judge, protocol=cfg.judge_protocol)
    judge_model = judge.model if getattr(judge, "available", False) else None
    if cfg.judge and judge_model is None and "generation" in tasks:
        say.say(f"judge {cfg.judge!r} is not available (no API key?): factuality will be reported as not scored")

    with run_lock(out):
        say.say(f"loading benchmark {cfg.bench} (forget {cfg.forget}%)")
        with timer("load_benchmark"):
            bench = load_benchmark(cfg.bench, cfg.forget, test_images=cfg.test_images, seed=cfg.seed)
        say.say(f"loading model {cfg.model}")
        with timer("load_model"):
            vlm = load_vlm(cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                           allow_pickle=cfg.allow_pickle_weights)
        with timer("hash_weights"):
            base_hash = vlm.weights_hash()

        fingerprint = {
            "model": display_source(cfg.model),
            "weights_hash": base_hash,
            "bench": display_source(cfg.bench),
            "bench_fingerprint": bench.fingerprint,
            "forget": cfg.forget,
            "method": cfg.method,
            "params": to_jsonable(params),
            "seed": cfg.seed,
            "shots": cfg.shots,
            "test_images": cfg.test_images,
            "dtype": cfg.dtype,
            "sets": list(cfg.sets),
            "tasks": list(cfg.tasks),
            "limit": cfg.limit,
            "judge": judge_model,
            "judge_protocol": cfg.judge_protocol if judge_model else None,
            "max_new_tokens": cfg.max_new_tokens,
            "scorers": list(cfg.scorers),
        }
        fp_hash = config_hash(fingerprint)
        resumed = claim_run_dir(out, fingerprint)
        store = SampleStore(out)
        reused_before = len(store)
        if resumed:
            say.say(f"resuming run in {out}: {reused_before} samples already done")

        # Plan: (set, task, mode) -> selected questions; chunks that still have missing qids.
        plan = []
        for set_name in cfg.sets:
            for task_name in cfg.tasks:
                for mode in MODES:
                    qs = limit_questions(bench.questions(sets=[set_name], tasks=[task_name], modes=[mode]), cfg.limit)
                    plan.append((set_name, task_name, mode, qs))
        todo = [(s, t, m, c) for s, t, m, qs in plan for c in chunks(qs, cfg.chunk_size) if store.missing(q.qid for q in c)]
        n_todo = sum(len(c) for *_, c in todo)

        method_json = out / METHOD_FILE
        stored_method = read_json(method_json, "method report") if method_json.exists() else None
        if not todo and stored_method and stored_method.get("config_hash") == fp_hash:
            method_info = stored_method["method_info"]  # nothing left to evaluate: no need to re-apply
        else:
            vlm, method_info = _apply_or_restore(cfg, out, vlm, bench, method_cls, params, fp_hash, base_hash, say,
                                                 timer)

        ctx = TaskContext(seed=cfg.seed, shots=cfg.shots, max_new_tokens=cfg.max_new_tokens,
                            batch_size=cfg.batch_size, judge=judge, bench=bench, scorers=tuple(cfg.scorers))
        if todo:
            say.say(f"evaluating {n_todo} questions ({len(todo)} chunks)")
        with timer("evaluate"), say.bar(n_todo, "evaluate") as bar:
            for set_name, task_name, mode, chunk in todo:
                bar.set_postfix_str(f"{set_name}/{task_name}/{mode}")
                with timer(f"evaluate:{task_name}"):
                    results = tasks[task_name].evaluate(vlm, chunk, ctx)
                got = {r.qid for r in results}
                lost = [q.qid for q in chunk if q.qid not in got]
                if lost:
                    raise RuntimeError(f"task {task_name!r} returned no result for {len(lost)} questions, e.g. {lost[0]}")
                store.append(results)
                bar.update(len(chunk))

        with timer("aggregate"):
            metrics: dict = {}
            for set_name, task_name, mode, qs in plan:
                samples = [SampleResult.from_dict(store.get(q.qid)) for q in qs]
                values = tasks[task_name].aggregate(samples) if samples else {
                    **{m: None for m in tasks[task_name].metrics}, "n": 0}
                metrics.setdefault(set_name, {}).setdefault(task_name, {})[mode] = to_jsonable(values)

        kept = bool(cfg.keep_model)
        ckpt = out / MODEL_DIR
        if not kept and ckpt.exists():
            shutil.rmtree(ckpt, ignore_errors=True)  # only a resume aid; the run is complete now
        method_info = dict(method_info)
        method_info["checkpoint"] = {**method_info.get("checkpoint", {}), "kept": kept and ckpt.exists()}

        commit, dirty = git_commit()
        timer.stages["total"] = round(time.perf_counter() - t_start, 3)
        manifest = {
            "run_id": out.name,
            "config_hash": fp_hash,
            "config": fingerprint,
            "model": {
                "source": fingerprint["model"],
                "weights_hash": base_hash,
                "unlearned_weights_hash": method_info.get("weights_hash"),
                "arch": getattr(vlm, "arch", None),
                "device": str(getattr(vlm, "device", "")) or None,
                "dtype": str(getattr(vlm, "dtype", "")) or None,
                "trust_remote_code": cfg.trust_remote_code,
                "allow_pickle_weights": cfg.allow_pickle_weights,
            },
            "benchmark": {"source": fingerprint["bench"], "fingerprint": bench.fingerprint, "forget": cfg.forget},
            "forget": cfg.forget,
            "method": {"name": cfg.method, "params": fingerprint["params"], "report": method_info.get("report"),
                       "weights_changed": method_info.get("weights_changed"),
                       "system_prompt": method_info.get("system_prompt"),
                       "checkpoint": method_info.get("checkpoint")},
            "seed": cfg.seed,
            "shots": cfg.shots,
            "examples": {s: {t: plan_examples(bench, s, t, cfg.shots, cfg.seed, vlm.arch).record()
                             for t in cfg.tasks} for s in cfg.sets} if cfg.shots != 0 else None,
            "test_images": cfg.test_images,
            "sets": list(cfg.sets),
            "tasks": list(cfg.tasks),
            "modes": list(MODES),
            "limit": cfg.limit,
            "scorers": list(cfg.scorers),
            "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.batch_size,
            "chunk_size": cfg.chunk_size,
            "prompt_style": getattr(vlm, "prompt_style", None),
            "judge": judge_model,
            "judge_protocol": cfg.judge_protocol if judge_model else None,
            "judge_requested": cfg.judge,
            "judge_stats": to_jsonable(getattr(judge, "stats", None)) if judge_model else None,
            "resume": {"resumed": resumed, "samples_reused": reused_before, "samples_evaluated": n_todo,
                       "apply_seconds_original": method_info.get("apply_seconds")},
            "packages": package_versions(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git_commit": commit,
            "git_dirty": dirty,
            "wall_time_s": dict(timer.stages),
            "started": started,
            "finished": now_iso(),
        }
        existing = out / RESULTS_FILE
        if not todo and existing.exists():
            stored = read_json(existing, "results file")
            same = (stored.get("manifest", {}).get("config_hash") == fp_hash
                    and stored.get("metrics") == json.loads(json.dumps(to_jsonable(metrics))))
            if same:  # a finished run rerun: keep the file (and its timings) as it was
                say.say(f"{existing} is up to date")
                return stored
        path = write_results(out, metrics, manifest)
        say.say(f"wrote {path}")
        return read_json(path, "results file")
