"""One run = load benchmark + model, apply the unlearning method, evaluate every task on every
requested set in both modes, write results.json.

Evaluation follows a batch plan: per (set, task, mode), the questions sorted by prompt length
(longest first, ties in benchmark order) and cut into batches of the batch size. The plan is a
deterministic function of the question list, the task and the batch size; each batch is
evaluated whole and appended to samples.jsonl, so a rerun with the same configuration reads
finished batches back and replays the same batches for the rest: its results are identical to
an uninterrupted run. An unlearned model whose weights changed is checkpointed to DIR/model/ so
the method is not re-trained.

Under `accelerate launch --num_processes N`, batches are dealt round-robin to the ranks; each
rank appends to its own samples.rank<r>.jsonl, rank 0 merges them and writes results.json
(mmunlearn.harness.core.distributed).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmunlearn.harness.app import defaults
from mmunlearn.harness.app.manifest import (
    build_manifest,
    config_hash,
    display_source,
    judge_model_of,
    now_iso,
    run_fingerprint,
)
from mmunlearn.harness.core import distributed, provenance
from mmunlearn.harness.core.bench import TEST_IMAGE_CHOICES, benchmark_of, load_benchmark
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.examples import OFFICIAL, parse_shots
from mmunlearn.harness.core.judge import DEFAULT_PROTOCOL, JUDGE_PROTOCOLS, Judge
from mmunlearn.harness.core.model import CPU_BATCH_SIZE, load_vlm
from mmunlearn.harness.core.objectives import DEFAULT_OBJECTIVE, check_objective
from mmunlearn.harness.core.records import MODES, ImageDecoder
from mmunlearn.harness.core.seeding import chunks, seed_everything
from mmunlearn.harness.core.results import (
    METHOD_FILE,
    MODEL_DIR,
    RESULTS_FILE,
    SampleStore,
    atomic_write_json,
    merge_shards,
    claim_run_dir,
    read_json,
    to_jsonable,
    write_results,
)
from mmunlearn.harness.core.contracts import get_method, parse_params
from mmunlearn.harness.core.contracts import UnlearnData
from mmunlearn.harness.core.contracts import get_task, registered_tasks
from mmunlearn.harness.core.contracts import SampleResult, TaskContext
from mmunlearn.harness.core.stages import StageContext, get_stage, run_stages, watching
from mmunlearn.harness.core.statistics import RESAMPLES
from mmunlearn.harness.core.uncertainty import Bootstrap, task_intervals, verify

CHECKPOINT_META = "checkpoint.json"
SELECT_CHOICES = ("final", "best")  # --select: the method's last step, or the sweep's best checkpoint


@dataclass
class RunConfig:
    """Everything the user chooses for one run (CLI flags map onto these one to one)."""

    model: str = str(defaults.DEFAULT_MODEL)
    bench: str = str(defaults.DEFAULT_BENCH)
    benchmark: str | None = None  # the plugin that reads `bench` (None: recognised from its layout / hub id)
    protocol: str | None = None  # the benchmark's protocol (None: its default)
    bench_options: dict[str, str] = field(default_factory=dict)  # raw --bench-option k=v strings
    objective: str = DEFAULT_OBJECTIVE  # what should fall (harness.core.objectives)
    # Utility suites scored after the method (--utility NAME[=PATH]): name -> source (None: the
    # embedded stand-in beside an embedded benchmark, else the suite's hub id), and their protocols.
    utility: dict[str, str | None] = field(default_factory=dict)
    utility_protocols: dict[str, str] = field(default_factory=dict)
    utility_limit: int | None = None  # questions per utility cell (--utility-limit)
    # --max-new-tokens was set (decided once, at construction): it then applies to the utility suites too
    max_new_tokens_given: bool | None = None

    def __post_init__(self):
        if self.max_new_tokens_given is None:
            self.max_new_tokens_given = self.max_new_tokens is not None

    forget: int | None = None  # the benchmark's own split name (None: its default)
    method: str = "vanilla"
    params: dict[str, str] = field(default_factory=dict)  # raw --param k=v strings
    seed: int = defaults.DEFAULT_SEED
    shots: int | str = OFFICIAL  # "official" in-context examples, or N example profiles (0: zero-shot)
    test_images: str = "random"  # one transformed image per test profile and task, seeded (official)
    sets: tuple[str, ...] = ()  # () = every set of the benchmark
    tasks: tuple[str, ...] = ()  # () = the protocol's tasks
    limit: int | None = None
    judge: str | None = "auto"  # the judge protocol's own model
    judge_protocol: str = DEFAULT_PROTOCOL
    dtype: str = "auto"
    batch_size: int | None = None
    max_new_tokens: int | None = None  # greedy decoding length (None: the protocol's, 50 for MLLMU-Bench)
    scorers: tuple[str, ...] = ("generate",)
    keep_model: bool = False
    device: str | None = None
    trust_remote_code: bool = False  # run a checkpoint's own Python code (recorded in the manifest)
    allow_pickle_weights: bool = False  # load .bin pickle weights (they can run code)
    device_map: str | None = None  # "auto": split the model across the visible GPUs (accelerate)
    name: str | None = None  # leaderboard label of an external checkpoint (recorded in the manifest)
    base_model: str | None = None  # what --model was unlearned from (provenance; an adapter's base)
    stages: tuple[str, ...] | None = None  # cross-set measurements after the tasks (None: the protocol's)
    holdout: str | None = "auto"  # never-seen profiles (privacy); auto: the benchmark's Holdout_Set if any
    reference_model: str | None = "auto"  # never saw the forget set (privacy); auto: the embedded one
    relearn_params: dict[str, str] = field(default_factory=dict)  # raw --relearn-param k=v (stage relearn)
    eval_every: int | None = None  # checkpoint sweep every N training steps (stage sweep)
    sweep_limit: int = 12  # questions per (set, task, mode) at each sweep checkpoint
    select: str = "final"  # the run's output model: the method's last step, or the sweep's best checkpoint
    # Profile-bootstrap resamples of every figure's interval (results.json "intervals", seeded with
    # --seed); 0: no intervals. Not part of the configuration: a rerun with another B only rewrites them.
    bootstrap: int = RESAMPLES

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
            raise ConfigError(
                f"--judge-protocol must be one of {', '.join(JUDGE_PROTOCOLS)}, got {self.judge_protocol!r}"
            )
        if self.device_map not in (None, "auto"):
            raise ConfigError(f"--device-map must be 'auto' when given, got {self.device_map!r}")
        check_objective(self.objective)
        self.resolve_benchmark()
        assert self.stages is not None and self.max_new_tokens is not None  # resolved from the protocol
        if self.eval_every is not None:
            if self.eval_every < 1:
                raise ConfigError(f"--eval-every must be >= 1, got {self.eval_every}")
            if "sweep" not in self.stages:
                self.stages = (*self.stages, "sweep")
        elif "sweep" in self.stages:
            raise ConfigError("stage sweep needs --eval-every N (score a subset every N training steps)")
        if self.select not in SELECT_CHOICES:
            raise ConfigError(f"--select must be one of {', '.join(SELECT_CHOICES)}, got {self.select!r}")
        if self.select == "best" and self.eval_every is None:
            raise ConfigError("--select best needs --eval-every N (the checkpoints it chooses among)")
        if self.select == "best" and distributed.launched():
            raise ConfigError("--select best runs in one process only (the checkpoints are scored on one rank)")
        if self.bootstrap != 0 and self.bootstrap < 2:
            raise ConfigError(f"--bootstrap must be 0 (no intervals) or >= 2 resamples, got {self.bootstrap}")
        if self.sweep_limit < 1:
            raise ConfigError(f"--sweep-limit must be >= 1, got {self.sweep_limit}")
        if self.relearn_params and "relearn" not in self.stages:
            raise ConfigError("--relearn-param is given but stage relearn is not run (add --stages ... relearn)")
        if self.name is not None and (not self.name.strip() or any(c in self.name for c in "\n\r|")):
            raise ConfigError(f"--name must be a non-empty label without newlines or '|', got {self.name!r}")

    def resolve_benchmark(self) -> None:
        """Fill what the benchmark decides (its name, forget split, protocol, sets, stages) and
        check the user's choices against it; idempotent."""
        plugin = benchmark_of(self.bench, self.benchmark)
        self.benchmark = plugin.name
        self.forget = plugin.check_forget(self.forget)
        suites = utility_suites(self)
        own = [p.name for p in plugin.protocols]
        if self.protocol is not None and self.protocol not in own:
            # `--protocol mmmu-lmms-eval`: a protocol of a utility suite, not of the benchmark
            takers = [n for n, s in suites.items() if self.protocol in [p.name for p in s.protocols]]
            if not takers:
                plugin.protocol(self.protocol)  # the benchmark's own error, naming its protocols
            for n in takers:
                self.utility_protocols[n] = self.protocol
            self.protocol = None
        protocol = plugin.protocol(self.protocol)
        self.protocol = protocol.name
        for n, p in self.utility_protocols.items():
            self.utility_protocols[n] = suites[n].protocol(p).name
        if self.utility_limit is not None and self.utility_limit < 1:
            raise ConfigError(f"--utility-limit must be >= 1, got {self.utility_limit}")
        suite_sets = tuple(s for cls in suites.values() for s in cls.sets())
        self.sets = tuple(dict.fromkeys(tuple(self.sets) or plugin.sets() + suite_sets))
        for s in self.sets:
            if s not in plugin.sets() + suite_sets:
                raise ConfigError(f"unknown set {s!r}; {plugin.name} has the sets {', '.join(plugin.sets())}")
        for s in suite_sets:  # a suite asked for is scored, whatever --sets says
            if s not in self.sets:
                self.sets = (*self.sets, s)
        if self.stages is None:
            self.stages = protocol.stages
        if self.max_new_tokens is None:
            self.max_new_tokens = protocol.max_new_tokens
        self.stages = tuple(self.stages)


def utility_suites(cfg: RunConfig) -> dict:
    """name -> the utility suite plugin of every --utility name (a non-utility benchmark is refused)."""
    from mmunlearn.harness.core.bench import get_benchmark

    out = {}
    for name in cfg.utility:
        cls = get_benchmark(name)
        if not cls.utility:
            raise ConfigError(f"--utility {name}: {name} is a benchmark, not a utility suite (run it with --bench)")
        out[name] = cls
    return out


def suite_lengths(cfg: RunConfig, bench) -> dict[str, int]:
    """set -> the decoding length of its utility suite's protocol (LLaVA-Bench 1024, MMMU 128,
    MME 3, POPE 5), unless --max-new-tokens was given for the whole run."""
    if cfg.max_new_tokens_given:
        return {}
    suites = getattr(bench, "suites", {})
    return {s: suite.plugin.protocol(suite.protocol).max_new_tokens for s, suite in suites.items() if suite.plugin}


def reads_embedded(cfg: RunConfig) -> bool:
    """Whether the run reads its benchmark's embedded stand-in (the data the tiny model was made on)."""
    plugin = benchmark_of(cfg.bench, cfg.benchmark)
    bench = Path(cfg.bench)
    return bool(plugin.embedded) and bench.exists() and bench.resolve() == (defaults.ASSETS / plugin.embedded).resolve()


def utility_source(cfg: RunConfig, name: str) -> str:
    """Where a utility suite is read from: the path given, else its embedded stand-in beside an
    embedded benchmark, else its hub id."""
    given = cfg.utility.get(name)
    if given:
        return given
    cls = utility_suites(cfg)[name]
    if reads_embedded(cfg) and cls.embedded:
        return str(defaults.ASSETS / cls.embedded)
    return cls.hub_ids[0]


def resolve_stage_inputs(cfg: RunConfig) -> None:
    """Resolve --holdout / --reference-model "auto": the benchmark folder's own holdout set, and
    the embedded retain-only reference model when the benchmark is the embedded mini-bench or the
    mini-CLEAR built from its people (the reference never saw any of their forget people); None
    (the figures say "not available") otherwise."""
    bench = Path(cfg.bench)
    plugin = benchmark_of(cfg.bench, cfg.benchmark)()
    if cfg.holdout == "auto":
        cfg.holdout = str(bench) if bench.is_dir() and plugin.has_holdout(bench) else None
    if cfg.reference_model == "auto":
        cfg.reference_model = str(defaults.DEFAULT_REFERENCE_MODEL) if reads_embedded(cfg) else None


def limit_questions(questions: list, limit: int | None) -> list:
    """At most `limit` questions, chosen by a hash of the qid (spread over profiles, the same
    for every method and seed), kept in benchmark order."""
    if limit is None or len(questions) <= limit:
        return list(questions)
    keep = {q.qid for q in sorted(questions, key=lambda q: hashlib.sha256(q.qid.encode()).hexdigest())[:limit]}
    return [q for q in questions if q.qid in keep]


class Progress:
    """Stage messages and tqdm bars on stderr; silent when disabled (tests)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"[mmunlearn] {msg}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        from mmunlearn.harness.core.progress import progress_bar

        return progress_bar(total=total, desc=desc, unit="q", disable=not self.enabled, file=sys.stderr, leave=True)


@contextlib.contextmanager
def run_lock(out: Path):
    """Refuse a second process on the same run directory (it would interleave samples)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    # flock belongs to the open file, so the kernel drops it when its process dies: a .lock file
    # left by a killed run never blocks the next one. The holder writes its PID for the message.
    path = out / ".lock"
    fh = open(path, "a+")  # not "w": that would wipe the holder's PID
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fh.fileno()).st_ino != os.stat(path).st_ino:
                raise OSError("lock file replaced")  # a finishing run unlinked it while we opened it
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(f"another mmunlearn process{pid} is using {out}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
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
def _apply_or_restore(
    cfg, out: Path, vlm, bench, method_cls, params, fingerprint_hash, base_hash, progress, timer, watch=None
):
    """Return (vlm, method_info). Reuses DIR/model/ when it holds this configuration's unlearned
    weights; otherwise applies the method (seeded; inside `watch()`, the stages' training
    observers) and checkpoints it if weights changed."""
    ckpt_dir = out / MODEL_DIR
    meta_path = ckpt_dir / CHECKPOINT_META
    if meta_path.exists():
        meta = read_json(meta_path, "model checkpoint metadata")
        if meta.get("config_hash") == fingerprint_hash:
            progress.say(f"reusing the unlearned model checkpoint in {ckpt_dir}")
            with timer("load_checkpoint"):
                restored = load_vlm(
                    str(ckpt_dir),
                    device=distributed.local_device() or cfg.device,
                    dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code,
                    device_map=cfg.device_map,
                )
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
    with watch() if watch else contextlib.nullcontext():
        result = method_cls().apply(vlm, data, params, cfg.seed)
    vlm, report = result.vlm, result.report
    vlm.system_prompt = result.system_prompt
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
    if new_hash != base_hash and distributed.is_main():
        progress.say(f"checkpointing the unlearned model into {ckpt_dir}")
        with timer("save_checkpoint"):
            tmp = out / f".{MODEL_DIR}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            vlm.save(tmp)
            info["checkpoint"] = {"saved": True, "reused": False, "path": MODEL_DIR}
            atomic_write_json(
                tmp / CHECKPOINT_META,
                {
                    "config_hash": fingerprint_hash,
                    "weights_hash": new_hash,
                    "system_prompt": info["system_prompt"],
                    "method_info": info,
                },
            )
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            os.replace(tmp, ckpt_dir)
    if distributed.is_main():
        atomic_write_json(out / METHOD_FILE, {"config_hash": fingerprint_hash, "method_info": info})
    distributed.barrier()
    return vlm, info


class Unlearned:
    """The run's unlearned model, made on first use (`make` applies the method or restores its
    checkpoint): a finished run that is rerun needs no model unless a stage has work left."""

    def __init__(self, make, info: dict | None = None):
        self._make, self._vlm, self._info = make, None, info

    def model(self):
        if self._vlm is None:
            self._vlm, self._info = self._make()
        return self._vlm

    @property
    def info(self) -> dict:
        if self._info is None:
            self.model()
        assert self._info is not None
        return self._info


# ---------------------------------------------------------------- the run
def plan_batches(tasks: dict, vlm, plan: list, ctx: TaskContext, batch_size: int) -> list[tuple]:
    """(set, task, mode, questions) batches: per (set, task, mode) list, the questions sorted by
    prompt length (longest first, so an out-of-memory error shows on the first batch; ties in
    benchmark order) and cut into batches of `batch_size`. A task without `requests` keeps
    benchmark order."""
    images = ImageDecoder()
    count = getattr(getattr(vlm, "tokenizer", None), "__call__", None)
    batches = []
    for set_name, task_name, mode, qs in plan:
        lengths: dict[str, int] = {}
        build = getattr(tasks[task_name], "requests", None)
        if callable(build) and callable(getattr(vlm, "prompt", None)) and count is not None:
            prep = build(vlm, qs, ctx, images)
            lengths = {
                q.qid: len(count(vlm.prompt(r), add_special_tokens=False)["input_ids"])
                for q, r in zip(prep.kept, prep.requests)
            }
        order = sorted(range(len(qs)), key=lambda i: (-lengths.get(qs[i].qid, 0), i))
        batches += [(set_name, task_name, mode, b) for b in chunks([qs[i] for i in order], batch_size)]
    return batches


def _stored_sample(store: SampleStore, key: str) -> dict:
    """The stored record of `key`: every planned question has one once evaluation is done."""
    record = store.get(key)
    if record is None:
        raise RuntimeError(f"{store.path} has no result for {key!r} after evaluation")
    return record


def default_batch_size(vlm) -> int:
    """CPU: 8. CUDA: what free memory allows for the KV cache of long prompts, a power of two in
    [1, 256] (backed off on out-of-memory during the run)."""
    import torch

    device = getattr(vlm, "device", None)
    if device is None or getattr(device, "type", "cpu") != "cuda":
        return CPU_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info(device)
    cfg: dict[str, Any] = getattr(getattr(vlm.model.config, "text_config", None), "to_dict", lambda: {})()
    per_token = 2 * cfg.get("num_hidden_layers", 32) * cfg.get("hidden_size", 4096) * vlm.dtype.itemsize
    per_sequence = 3 * per_token * 1024  # KV cache of a 1,024-token prompt + answer, with 3x slack for activations
    size = max(1, min(256, int(0.8 * free // per_sequence)))
    return 1 << (size.bit_length() - 1)


def run_benchmark(cfg: RunConfig, out: str | os.PathLike, progress: bool = True) -> dict:
    """Execute (or resume) one run into `out`; returns the results dict also written to results.json.
    Under a multi-process launch every rank calls this; rank 0 writes the results."""
    cfg.validate()
    resolve_stage_inputs(cfg)
    base_source = provenance.base_of(cfg.model, cfg.base_model)
    # Checked before anything is written: a checkpoint that is not its base's is refused.
    base = provenance.check_base(cfg.model, base_source, cfg.trust_remote_code) if base_source else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed.rank(), distributed.world_size()
    say = Progress(progress and rank == 0)
    timer = Timer()
    started = now_iso()
    t_start = time.perf_counter()
    method_cls, params, tasks, judge = resolve_plugins(cfg, say)  # before loading anything heavy

    with run_lock(out) if rank == 0 else contextlib.nullcontext():
        bench, vlm = load_inputs(cfg, base_source, say, timer)
        with timer("hash_weights"):
            base_hash = vlm.weights_hash()
        fingerprint = run_fingerprint(
            cfg,
            weights_hash=base_hash,
            bench=bench,
            params=params,
            tasks=tasks,
            judge_model=judge_model_of(judge),
            base_source=base_source,
        )
        fp_hash = config_hash(fingerprint)
        resumed = claim_run_dir(out, fingerprint)  # every rank: same check, same (atomic) write
        if rank == 0:
            merge_shards(out)  # samples a killed multi-process run left in per-rank files
        distributed.barrier()
        store = SampleStore(out)
        reused_before = len(store)
        if resumed:
            say.say(f"resuming run in {out}: {reused_before} samples already done")

        plan = plan_questions(cfg, bench, tasks)
        missing = any(store.missing(tasks[t].sample_id(q) for q in qs) for _, t, _, qs in plan)
        method_json = out / METHOD_FILE
        stored_method = read_json(method_json, "method report") if method_json.exists() else None
        reusable = bool(not missing and stored_method and stored_method.get("config_hash") == fp_hash)
        batch_size = cfg.batch_size or default_batch_size(vlm)
        ctx = TaskContext(
            seed=cfg.seed,
            shots=cfg.shots,
            max_new_tokens=cfg.max_new_tokens or 50,  # resolved by validate(): the protocol's length
            batch_size=batch_size,
            judge=judge,
            bench=bench,
            scorers=tuple(cfg.scorers),
        )
        metrics: dict = {}
        base_vlm = vlm
        stage_ctx: StageContext  # made below; the method is applied only after
        unlearned = Unlearned(
            lambda: _apply_or_restore(
                cfg,
                out,
                base_vlm,
                bench,
                method_cls,
                params,
                fp_hash,
                base_hash,
                say,
                timer,
                watch=(lambda: watching(cfg.stages, stage_ctx)) if rank == 0 else None,
            ),
            stored_method["method_info"] if reusable and stored_method else None,  # nothing to evaluate: no re-apply
        )
        stage_ctx = StageContext(
            cfg,
            unlearned.model,
            bench,
            ctx,
            store,
            out,
            metrics,
            select=lambda qs: limit_questions(qs, cfg.limit),
            subset=limit_questions,
            display=display_source,
            say=say.say,
            bar=say.bar,
            bootstrap=Bootstrap(resamples=cfg.bootstrap, seed=cfg.seed) if cfg.bootstrap else None,
        )
        if not reusable:
            vlm = unlearned.model()
        with timer("plan"):
            batches = plan_batches(tasks, vlm, plan, ctx, batch_size) if missing else []
        mine = [
            b
            for i, b in enumerate(batches)
            if i % world == rank and store.missing(tasks[b[1]].sample_id(q) for q in b[3])
        ]
        n_todo = sum(len(b[3]) for b in mine)
        writer = store if world == 1 else SampleStore(out, shard=rank)
        if mine:
            say.say(
                f"evaluating {n_todo} questions in {len(mine)} batches of up to {batch_size}"
                + (f" (rank 0 of {world})" if world > 1 else "")
            )
        with timer("evaluate"), say.bar(n_todo, "evaluate") as bar:
            evaluate_batches(
                tasks,
                vlm,
                mine,
                ctx,
                writer,
                bar,
                timer,
                auto=cfg.batch_size is None,
                lengths=suite_lengths(cfg, bench),
            )
        shares = distributed.gather_objects(n_todo)
        distributed.barrier()
        if rank != 0:  # rank 0 merges and writes; the others return what it wrote
            distributed.barrier()
            return read_json(out / RESULTS_FILE, "results file")
        if world > 1:
            merge_shards(out)
            store = stage_ctx.store = SampleStore(out)

        with timer("aggregate"):
            aggregate_into(metrics, plan, tasks, store)
        boot = stage_ctx.bootstrap
        if boot is not None:
            with timer("intervals"):  # the stages add theirs as they run (run_stages)
                stage_ctx.intervals = task_intervals(metrics, plan, tasks, store, boot)
        stage_records = run_stages(cfg.stages, stage_ctx, timer)
        intervals: dict | None = None
        dropped: list[str] = []
        if boot is not None:
            with timer("intervals"):
                intervals, dropped = verify(stage_ctx.intervals, metrics)
            if dropped:
                say.say(f"no interval for {len(dropped)} figures whose interval is not theirs: {', '.join(dropped)}")
        method_info = release_checkpoint(unlearned.info, out, keep=bool(cfg.keep_model))
        timer.stages["total"] = round(time.perf_counter() - t_start, 3)
        manifest = build_manifest(
            cfg,
            out,
            fingerprint,
            base=base,
            method_info=method_info,
            vlm=vlm,
            bench=bench,
            tasks=tasks,
            judge=judge,
            stage_records=stage_records,
            timer=timer,
            started=started,
            run_stats={
                "batch_size": batch_size,
                "distributed": {"world_size": world, "questions_per_rank": shares},
                "resume": {
                    "resumed": resumed,
                    "samples_reused": reused_before,
                    "samples_evaluated": n_todo,
                    "apply_seconds_original": method_info.get("apply_seconds"),
                },
            },
        )
        manifest["intervals"] = None if boot is None else {**boot.manifest(), "dropped": dropped}
        write_unless_current(out, metrics, manifest, say, finished_before=not missing, intervals=intervals)
        distributed.barrier()  # the other ranks read results.json now
        return read_json(out / RESULTS_FILE, "results file")


def resolve_plugins(cfg: RunConfig, say: Progress) -> tuple:
    """(method class, its parsed parameters, {name: task}, judge or None): every name and
    parameter checked before anything heavy is loaded."""
    method_cls = get_method(cfg.method)
    params = parse_params(method_cls, dict(cfg.params))
    names = (*cfg.tasks, *(t for t in suite_tasks(cfg) if t not in cfg.tasks)) if cfg.tasks else default_tasks(cfg)
    tasks = {name: get_task(name) for name in names}
    listed = benchmark_of(cfg.bench, cfg.benchmark).protocol(cfg.protocol).tasks
    if listed is not None:  # a protocol that names its tasks scores with those only
        foreign = [t for t in cfg.tasks if t not in listed and t not in suite_tasks(cfg)]
        if foreign:
            raise ConfigError(
                f"task {foreign[0]!r} is not a task of protocol {cfg.protocol!r} ({', '.join(listed)}): "
                "another protocol's task would score these questions in another format"
            )
    plugin = benchmark_of(cfg.bench, cfg.benchmark)
    types = plugin.question_types() + tuple(t for cls in utility_suites(cfg).values() for t in cls.question_types())
    for name, task in tasks.items():
        if task.question_type() not in types:
            raise ConfigError(
                f"task {name!r} reads {task.question_type()} questions, which {plugin.name} does not have "
                f"(its question types: {', '.join(plugin.question_types())})"
            )
    for name in cfg.stages or ():
        stage = get_stage(name)  # an unknown stage fails before anything is loaded
        lacking = [t for t in stage.reads if t not in plugin.question_types()]
        if lacking:
            raise ConfigError(
                f"stage {name!r} reads {', '.join(lacking)} questions, which {plugin.name} does not have "
                f"(its question types: {', '.join(plugin.question_types())})"
            )
    judge = Judge.from_args(cfg.judge, protocol=cfg.judge_protocol)
    judged = [name for name, task in tasks.items() if task.needs_judge]
    if judged and judge_model_of(judge) is None:
        say.say(
            f"no judge is available ({'no API key?' if cfg.judge else '--judge none'}): the judged figures of "
            f"{', '.join(judged)} will be reported as not scored"
        )
    return method_cls, params, tasks, judge


def default_tasks(cfg: RunConfig) -> tuple[str, ...]:
    """The protocol's tasks, or (protocol without a list) every registered task that reads one of
    the benchmark's question types."""
    plugin = benchmark_of(cfg.bench, cfg.benchmark)
    protocol = plugin.protocol(cfg.protocol)
    if protocol.tasks is not None:
        own = protocol.tasks
    else:
        own = tuple(t for t in registered_tasks() if get_task(t).question_type() in plugin.question_types())
    # only the tasks the chosen sets have questions for (CLEAR --sets forget retain: no VQA task)
    own = tuple(t for t in own if any(plugin.layout.get(s, {}).get(get_task(t).question_type()) for s in cfg.sets))
    return own + tuple(t for t in suite_tasks(cfg) if t not in own)


def suite_tasks(cfg: RunConfig) -> tuple[str, ...]:
    """The tasks of every --utility suite's protocol (scored whatever --tasks says)."""
    suites = utility_suites(cfg)
    return tuple(
        dict.fromkeys(t for n, cls in suites.items() for t in (cls.protocol(cfg.utility_protocols.get(n)).tasks or ()))
    )


def load_inputs(cfg: RunConfig, base_source: str | None, say: Progress, timer: Timer) -> tuple:
    """(benchmark, model) as the run configuration names them."""
    say.say(f"loading benchmark {cfg.bench} ({cfg.benchmark}, protocol {cfg.protocol}, forget {cfg.forget})")
    with timer("load_benchmark"):
        bench = load_benchmark(
            cfg.bench,
            cfg.forget,
            test_images=cfg.test_images,
            seed=cfg.seed,
            benchmark=cfg.benchmark,
            protocol=cfg.protocol,
            options=cfg.bench_options,
        )
        for name in cfg.utility:
            source = utility_source(cfg, name)
            say.say(f"loading utility suite {name} from {source}")
            bench.attach(load_benchmark(source, benchmark=name, protocol=cfg.utility_protocols.get(name)))
    say.say(f"loading model {cfg.model}")
    with timer("load_model"):
        vlm = load_vlm(
            cfg.model,
            device=distributed.local_device() or cfg.device,
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
            allow_pickle=cfg.allow_pickle_weights,
            device_map=cfg.device_map,
            base_model=base_source,
        )
    return bench, vlm


def plan_questions(cfg: RunConfig, bench, tasks: dict) -> list[tuple]:
    """(set, task, mode, questions) for every cell the run scores, --limit applied; a cell without
    questions is a configuration error (an empty mean is no figure)."""
    plan = []
    for set_name in cfg.sets:
        for task_name in tasks:
            for mode in MODES:
                if mode not in bench.cells(set_name, tasks[task_name].question_type()):
                    continue  # the benchmark has no such cell by design (e.g. CLEAR's real set in text)
                qs = limit_questions(
                    bench.questions(sets=[set_name], tasks=[tasks[task_name].question_type()], modes=[mode]),
                    cfg.utility_limit if set_name in getattr(bench, "suites", {}) else cfg.limit,
                )
                if not qs:
                    raise ConfigError(
                        f"the benchmark has no {task_name} questions in set {set_name!r}, mode "
                        f"{mode!r}: nothing to score there (choose --sets/--tasks that have some)"
                    )
                plan.append((set_name, task_name, mode, qs))
    unplanned = [t for t in tasks if not any(c[1] == t for c in plan)]
    if unplanned:
        raise ConfigError(
            f"task {unplanned[0]!r} has no questions in the sets {', '.join(cfg.sets)} of {bench.name}: nothing "
            "to score (choose --sets/--tasks that have some)"
        )
    return plan


def aggregate_into(metrics: dict, plan: list[tuple], tasks: dict, store: SampleStore) -> None:
    """metrics[set][task][mode] = the task's aggregate over the cell's stored answers (filled in
    place: the stages hold the same dict)."""
    for set_name, task_name, mode, qs in plan:
        samples = [SampleResult.from_dict(_stored_sample(store, tasks[task_name].sample_id(q))) for q in qs]
        values = tasks[task_name].aggregate(samples)
        metrics.setdefault(set_name, {}).setdefault(task_name, {})[mode] = to_jsonable(values)


def release_checkpoint(method_info: dict, out: Path, keep: bool) -> dict:
    """The finished run's method report; DIR/model/ was only a resume aid and is removed unless
    --keep-model (the report says whether it was kept)."""
    ckpt = out / MODEL_DIR
    if not keep and ckpt.exists():
        shutil.rmtree(ckpt, ignore_errors=True)
    info = dict(method_info)
    info["checkpoint"] = {**info.get("checkpoint", {}), "kept": keep and ckpt.exists()}
    return info


def write_unless_current(
    out: Path, metrics: dict, manifest: dict, say: Progress, finished_before: bool, intervals: dict | None = None
) -> None:
    """Write results.json, except when a finished run is rerun and its file already holds these
    metrics and intervals for this configuration: it is kept, with its original timings."""
    existing = out / RESULTS_FILE
    stored = read_json(existing, "results file") if finished_before and existing.exists() else None
    plain = lambda obj: json.loads(json.dumps(to_jsonable(obj)))  # noqa: E731 - as read back from the file
    if stored and (
        stored.get("manifest", {}).get("config_hash") == manifest["config_hash"]
        and stored.get("metrics") == plain(metrics)
        and stored.get("intervals") == plain(intervals)
    ):
        say.say(f"{existing} is up to date")
    else:
        say.say(f"wrote {write_results(out, metrics, manifest, intervals)}")


def evaluate_batches(
    tasks: dict,
    vlm,
    batches: list,
    ctx: TaskContext,
    store: SampleStore,
    bar,
    timer,
    auto: bool = False,
    lengths: dict[str, int] | None = None,
) -> None:
    """Evaluate each batch whole and append its results. With an automatic batch size on CUDA, an
    out-of-memory batch is split in halves (finished batches are kept) and the smaller size is
    used from then on."""
    import torch

    lengths = lengths or {}  # set -> its utility suite's decoding length
    queue = list(batches)
    while queue:
        set_name, task_name, mode, batch = queue.pop(0)
        bar.set_postfix_str(f"{set_name}/{task_name}/{mode}")
        try:
            with timer(f"evaluate:{task_name}"):
                cell_ctx = replace(ctx, max_new_tokens=lengths[set_name]) if set_name in lengths else ctx
                results = tasks[task_name].evaluate(vlm, batch, cell_ctx)
        except torch.cuda.OutOfMemoryError:
            if not auto or len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            half = (len(batch) + 1) // 2
            ctx.batch_size = half
            queue[:0] = [(set_name, task_name, mode, batch[:half]), (set_name, task_name, mode, batch[half:])]
            continue
        got = {r.qid for r in results}
        lost = [q.qid for q in batch if tasks[task_name].sample_id(q) not in got]
        if lost:
            raise RuntimeError(f"task {task_name!r} returned no result for {len(lost)} questions, e.g. {lost[0]}")
        store.append(results)
        bar.update(len(batch))
