"""Question-by-question check that the harness evaluates as the official MLLMU-Bench eval.py does.

    .venv/bin/python scripts/compare_official.py [--official PATH] [--model DIR] [--bench DIR]
        [--forget 5] [--sets forget test retain celebrity] [--json PATH] [--log PATH] [--work DIR]

Both sides run the same saved LLaVA folder (default: the embedded tiny LLaVA) on the same
MLLMU-Bench-layout folder (default: the embedded mini-bench; built there with seed 0 when the
folder does not exist), on CPU in float32, zero-shot, with the first transformed image of each
test profile:

* official: `evaluate_classification`, `evaluate_fill_in_the_blank` and `evaluate_generation` of
  eval.py, called as its `main()` calls them (modes forget, test, retain_shared,
  retain_celebrity; args.model_id = "llava-hf/llava-1.5-7b-hf", so the LLaVA branches run);
* ours: `mmunlearn.harness.app.runner.run_benchmark(RunConfig(method="vanilla", shots=0, test_images="first",
  judge=None, device="cpu"))`, read back from `<work>/ours/samples.jsonl`; our prompt strings are
  rebuilt with `Task.requests` and the adapter's `vlm.prompt(req)`.

eval.py is never copied into the project. `--official PATH` is a file, a folder holding
eval.py, or a git directory (read with `git --git-dir=PATH show HEAD:eval.py`); the default is
the local mirror /work/.mirror/franciscoliu+MLLMU-Bench/repo (or $MLLMU_BENCH_OFFICIAL). Its
source is executed UNMODIFIED as a fresh module; no text transformation is applied. It imports
scikit-learn, nltk and rouge_score at top level: a missing one ends the script with
`pip install ...` and exit status 2.

What is patched (module globals of that module and the objects passed to its functions only):
  1. `random` -> a stand-in whose `sample(population, k)` returns [] (no in-context example
     profile: `selected_ids = []` leaves the few-shot lists empty, `few_shot_question_indices`
     empty so no question is skipped, and `[*few_shot_images, image] == [image]`) and whose
     `choice(seq)` returns `seq[0]` (the first test image). The script checks that
     classification and cloze each drew exactly once, that no prompt holds an example
     ("Correct Answer:") and that every question of the data was answered.
  2. `print` -> a recorder (echoed to --log): the per-question "Prompt:", "Model Answer:",
     "Correct Answer:", "The model answer is:" and "###### Generation ...######" lines are the
     official outputs compared here, taken as the Python objects printed.
  3. `rouge_scorer` -> the real module whose RougeScorer also records each per-question score
     (eval.py only writes averages), so the official per-question ROUGE-L is compared as computed.
  4. `tqdm` -> a pass-through (progress bars only).
  5. `processor` / `tokenizer` arguments -> thin proxies of the real objects: what their call
     returns has a `.to(device)` that moves to CPU instead of "cuda"; and `decode` records the
     newly generated text. With `--decode rebuild` (the default `auto` picks it when the
     tokenizer cannot decode "ASSISTANT:" back, as the tiny model's lowercasing word-level
     tokenizer decodes it to "assistant :") decode returns the prompt string as eval.py passed
     it, a space, then the decoded new tokens: what a cased tokenizer (LLaVA-1.5's Llama
     tokenizer) gives for `outputs[0][2:]`, except that the two leading prompt tokens eval.py
     slices off are kept (they hold no "ASSISTANT:"); eval.py's `split("ASSISTANT:")[1]` then
     sees the response. Without it (`--decode raw`) eval.py parses the whole decoded prompt as
     the answer: no letter, ROUGE against the prompt. The model is loaded with eval.py's own
     LlavaForConditionalGeneration/AutoProcessor/AutoTokenizer, float32 on CPU (its `main()`
     loads float16 on CUDA).

Questions are matched on (set, profile ID, task, mode, index of the question within the
profile's questions of that task and mode). eval.py prints no profile ID for classification and
cloze, so its outputs are assigned in its loop order (rows of the evaluated parquet in file
order; classification: Image_Textual_Questions, then Pure_Text_Questions; cloze and generation:
Mask_Task / Generation_Task order), and each is checked against the data (correct letter or
ground truth, question text in the prompt; generation: image_id and question from its results
JSON): a misalignment stops the script.

Printed per set x task x mode: n (questions on either side), the share of identical prompt
strings, and agreement: classification = same parsed letter (official `predicted_answer` vs our
`extra["letter"]`), cloze = same correctness, generation = identical extracted answer and equal
ROUGE-L (1e-9); a question on one side only counts as disagreeing. Also each side's metric
(accuracy, accuracy, mean ROUGE-L). Exit 1 if any cell agrees below --min-agreement (0.99),
else 0; differing examples (both prompts, both responses) are printed for failing cells and for
cells whose prompts differ. --json also gives per cell the share of identical raw responses and
the keys that disagree. --work keeps `official/records.jsonl` (eval.py's per-question records),
`official/*_generation_results.json` and `ours/` (our run directory).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OFFICIAL = os.environ.get("MLLMU_BENCH_OFFICIAL", "/work/.mirror/franciscoliu+MLLMU-Bench/repo")
DEFAULT_MODEL_ID = "llava-hf/llava-1.5-7b-hf"  # eval.py branches on args.model_id.startswith("llava")
SETS = ("forget", "test", "retain", "celebrity")
OFFICIAL_MODE = {"forget": "forget", "test": "test", "retain": "retain_shared", "celebrity": "retain_celebrity"}
TASKS = ("classification", "cloze", "generation")
MODES = ("image_text", "text_only")
TYPE_TO_MODE = {"Image_Textual": "image_text", "Pure_Text": "text_only"}
OFFICIAL_FUNCTION = {
    "classification": "evaluate_classification",
    "cloze": "evaluate_fill_in_the_blank",
    "generation": "evaluate_generation",
}
PARQUET = "train-00000-of-00001.parquet"
ASSISTANT = "ASSISTANT:"
ROUGE_TOL = 1e-9
# eval.py's top-level third-party imports this project does not all depend on: module -> pip name
OFFICIAL_IMPORTS = {"sklearn": "scikit-learn", "nltk": "nltk", "rouge_score": "rouge-score", "pandas": "pandas"}


class Unusable(Exception):
    """The check cannot run (missing package or official file): exit status 2."""


# ============================================================================ loading eval.py


def missing_packages() -> list[str]:
    return [pip for module, pip in OFFICIAL_IMPORTS.items() if importlib.util.find_spec(module) is None]


def read_official(path: str) -> tuple[str, str]:
    """(source of eval.py, a label saying where it came from)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.read_text(encoding="utf-8"), str(p)
    if p.is_dir():
        git = subprocess.run(
            ["git", f"--git-dir={p}", "show", "HEAD:eval.py"], capture_output=True, text=True, check=False
        )
        if git.returncode == 0:
            rev = subprocess.run(
                ["git", f"--git-dir={p}", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
            )
            return git.stdout, f"{p} @ {rev.stdout.strip() or 'HEAD'}:eval.py"
        if (p / "eval.py").is_file():
            return (p / "eval.py").read_text(encoding="utf-8"), str(p / "eval.py")
    raise Unusable(f"no official eval.py at {path} (give --official: the file, its folder or a git directory)")


def load_official(path: str) -> tuple[types.ModuleType, str]:
    """eval.py executed unmodified as a fresh module (never imported from, nor copied into, the project)."""
    missing = missing_packages()
    if missing:
        raise Unusable(
            f"the official eval.py imports {', '.join(missing)}, not installed here: pip install {' '.join(missing)}"
        )
    source, label = read_official(path)
    module = types.ModuleType("mllmu_bench_official_eval")
    module.__file__ = label
    exec(compile(source, label, "exec"), module.__dict__)  # noqa: S102 - running eval.py is the point
    for name in OFFICIAL_FUNCTION.values():
        if not callable(module.__dict__.get(name)):
            raise Unusable(f"{label} defines no function {name}")
    return module, label


# ============================================================================ patches


class ZeroShotRandom:
    """Stands in for eval.py's `random`: no example profiles, the first test image."""

    def __init__(self):
        self.samples = 0
        self.choices = 0

    def sample(self, population, k):
        self.samples += 1
        return []

    def choice(self, seq):
        self.choices += 1
        return seq[0]


class PrintCapture:
    """Stands in for eval.py's `print`: keeps the printed objects, echoes text to a log."""

    def __init__(self, log=None):
        self.calls: list[tuple] = []
        self.log = log

    def __call__(self, *args, sep=" ", end="\n", **_):
        self.calls.append(args)
        if self.log is not None:
            self.log.write(sep.join(str(a) for a in args) + end)

    def take(self) -> list[tuple]:
        calls, self.calls = self.calls, []
        return calls


def recording_rouge(scores: list):
    """`rouge_scorer` as eval.py uses it, with every score() result appended to `scores`."""
    from rouge_score import rouge_scorer as real

    class RougeScorer(real.RougeScorer):
        def score(self, target, prediction):
            result = super().score(target, prediction)
            scores.append({"target": target, "prediction": prediction, "rougeL": result["rougeL"].fmeasure})
            return result

    return types.SimpleNamespace(RougeScorer=RougeScorer)


def prompt_overlap(prompt_ids: list[int], ids: list[int]) -> int:
    """How many leading prompt tokens `ids` (prompt + generated, eval.py slices [2:]) left out."""
    for k in range(len(prompt_ids)):
        if ids[: len(prompt_ids) - k] == prompt_ids[k:]:
            return k
    raise RuntimeError("decode() was not given the last prompt followed by generated tokens")


def decode_is_lossy(tokenizer) -> bool:
    """True when the tokenizer cannot give "ASSISTANT:" back (eval.py's answer split then fails)."""
    ids = tokenizer("USER: hi\nASSISTANT:", add_special_tokens=False)["input_ids"]
    return ASSISTANT not in tokenizer.decode(ids, skip_special_tokens=True)


class DecodeLog:
    """Shared by the processor and tokenizer proxies: the last prompt encoded, every decode."""

    def __init__(self, rebuild: bool):
        self.rebuild = rebuild
        self.text: str | None = None
        self.ids: list[int] = []
        self.responses: list[str] = []  # decoded new tokens per decode call, stripped

    def encoded(self, text, ids: list[int]) -> None:
        self.text, self.ids = text, ids

    def decode(self, inner, token_ids, *args, **kwargs) -> str:
        ids = [int(t) for t in token_ids]
        k = prompt_overlap(self.ids, ids)
        new = inner.decode(ids[len(self.ids) - k :], *args, **kwargs)
        self.responses.append(new.strip())
        return f"{self.text} {new}" if self.rebuild else inner.decode(token_ids, *args, **kwargs)

    def take(self) -> list[str]:
        out, self.responses = self.responses, []
        return out


class OnDevice:
    """What the proxies' call returns: `.to("cuda")` moves to `device` instead."""

    def __init__(self, batch, device):
        self._batch, self._device = batch, device

    def to(self, *args, **kwargs):
        return self._batch.to(self._device)

    def __getattr__(self, name):
        return getattr(self._batch, name)


class EncoderProxy:
    """A processor or tokenizer as handed to eval.py (see the module docstring, patch 5)."""

    def __init__(self, inner, log: DecodeLog, device):
        self._inner, self._log, self._device = inner, log, device

    def __call__(self, *args, **kwargs):
        batch = self._inner(*args, **kwargs)
        text = kwargs["text"] if "text" in kwargs else args[0]
        self._log.encoded(text, batch["input_ids"][0].tolist())
        return OnDevice(batch, self._device)

    def decode(self, token_ids, *args, **kwargs):
        return self._log.decode(self._inner, token_ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


# ============================================================================ the official run


def official_rows(bench: Path, set_name: str, forget: int) -> list[dict]:
    """The rows eval.py evaluates for one set, in its order (its `eval_samples`)."""
    import pandas as pd

    forget_df = pd.read_parquet(bench / f"forget_{forget}" / PARQUET)
    if set_name == "test":
        files = sorted((bench / "Test_Set").glob("*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        df = df[df["ID"].isin(forget_df["ID"].unique().tolist())]
    else:
        df = forget_df if set_name == "forget" else pd.read_parquet(official_paths(bench, forget)[set_name])
    return [row.to_dict() for _, row in df.iterrows()]


def official_paths(bench: Path, forget: int) -> dict[str, Path]:
    """What eval.py's main() passes per set (--test_data is the Test_Set folder)."""
    return {
        "forget": bench / f"forget_{forget}" / PARQUET,
        "test": bench / "Test_Set",
        "retain": bench / f"retain_{100 - forget}" / PARQUET,
        "celebrity": bench / "Retain_Set" / PARQUET,
        "few_shot": bench / "Full_Set" / PARQUET,
    }


def question_order(rows: list[dict], task: str) -> list[dict]:
    """The questions eval.py asks, in its loop order, each with its key fields and data."""
    out = []
    for row in rows:
        pid = str(row["ID"])
        if task == "classification":
            lists = row["Classification_Task"]
            for mode, key in (("image_text", "Image_Textual_Questions"), ("text_only", "Pure_Text_Questions")):
                for i, q in enumerate(lists.get(key, [])):
                    out.append(
                        {
                            "profile": pid,
                            "mode": mode,
                            "index": i,
                            "question": q["Question"],
                            "answer": q["Correct_Answer"],
                        }
                    )
        else:
            index = dict.fromkeys(MODES, 0)
            for q in row["Mask_Task" if task == "cloze" else "Generation_Task"]:
                mode = TYPE_TO_MODE[q["Type"]]
                out.append(
                    {
                        "profile": pid,
                        "mode": mode,
                        "index": index[mode],
                        "question": q["Question"],
                        "answer": q["Ground_Truth"],
                    }
                )
                index[mode] += 1
    return out


def printed_blocks(calls: list[tuple], labels: dict[str, str], first: str) -> list[dict]:
    """Group printed (label, value) calls into one dict per question, starting at label `first`."""
    blocks: list[dict] = []
    for call in calls:
        if len(call) == 2 and isinstance(call[0], str) and call[0] in labels:
            if labels[call[0]] == first:
                blocks.append({})
            if blocks:
                blocks[-1][labels[call[0]]] = call[1]
    return blocks


CHOICE_LABELS = {
    "Prompt: ": "prompt",
    "Model Answer: ": "answer",
    "Correct Answer: ": "truth",
    "The model answer is: ": "verdict",
}
GENERATION_LABELS = {
    "###### Generation Question: ######": "question",
    "###### Generation Prompt: ######": "prompt",
    "###### Generation ASSISTANT: ######": "answer",
    "###### Generation Ground Truth: ######": "truth",
}


def assemble(
    set_name: str,
    task: str,
    expected: list[dict],
    calls: list[tuple],
    responses: list[str],
    rouge: list[dict] | None = None,
    generation_json: dict | None = None,
) -> dict[tuple, dict]:
    """Official per-question records keyed (set, profile, task, mode, index); checks alignment."""
    if task == "generation":
        blocks = printed_blocks(calls, GENERATION_LABELS, "question")
        entries = (generation_json or {}).get("Generation_Questions", [])
        rouge = rouge or []
    else:
        blocks = printed_blocks(calls, CHOICE_LABELS, "prompt")
    counts = {"questions in the data": len(expected), "printed answers": len(blocks), "decodes": len(responses)}
    if task == "generation":
        counts.update({"results JSON entries": len(entries), "ROUGE scores": len(rouge)})
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"official {set_name}/{task}: counts differ: {counts} (a question was skipped or added)")
    out = {}
    for i, (exp, block, response) in enumerate(zip(expected, blocks, responses)):
        where = f"official {set_name}/{task} #{i} (profile {exp['profile']})"
        prompt = block.get("prompt")
        if not isinstance(prompt, str) or "Correct Answer:" in prompt:
            raise RuntimeError(f"{where}: prompt missing or holds an in-context example: {prompt!r}")
        if task == "classification":
            if block.get("truth") != exp["answer"] or exp["question"] not in prompt:
                raise RuntimeError(f"{where}: printed question does not line up with the data")
            rec = {
                "prompt": prompt,
                "response": response,
                "letter": block.get("answer"),
                "answer": block.get("answer"),
                "correct": bool(block.get("verdict")),
            }
        elif task == "cloze":
            if str(block.get("truth")) != str(exp["answer"]) or exp["question"].replace("__", "[Blank]") not in prompt:
                raise RuntimeError(f"{where}: printed question does not line up with the data")
            rec = {
                "prompt": prompt,
                "response": response,
                "answer": block.get("answer"),
                "correct": bool(block.get("verdict")),
            }
        else:
            entry, score = entries[i], rouge[i]
            if (
                str(entry["image_id"]) != exp["profile"]
                or entry["question"] != exp["question"]
                or TYPE_TO_MODE.get(entry["question type"]) != exp["mode"]
                or score["prediction"] != entry["generated_answer"]
            ):
                raise RuntimeError(f"{where}: results JSON does not line up with the data")
            rec = {
                "prompt": prompt,
                "response": response,
                "answer": entry["generated_answer"],
                "rougeL": score["rougeL"],
            }
        out[(set_name, exp["profile"], task, exp["mode"], exp["index"])] = rec
    return out


def run_official(
    module,
    model_dir: str,
    bench: Path,
    forget: int,
    sets,
    work: Path,
    decode: str,
    model_id: str = DEFAULT_MODEL_ID,
    log=None,
) -> tuple[dict[tuple, dict], dict]:
    """Run eval.py's three functions on every requested set; per-question records and run info."""
    import torch

    device = torch.device("cpu")
    model = module.LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    processor = module.AutoProcessor.from_pretrained(model_dir)
    tokenizer = module.AutoTokenizer.from_pretrained(model_dir)
    rebuild = decode_is_lossy(tokenizer) if decode == "auto" else decode == "rebuild"
    decodes = DecodeLog(rebuild)
    rng, printer, rouge = ZeroShotRandom(), PrintCapture(log), []
    module.random = rng
    module.print = printer
    module.rouge_scorer = recording_rouge(rouge)
    module.tqdm = lambda iterable, *a, **k: iterable
    proc, tok = EncoderProxy(processor, decodes, device), EncoderProxy(tokenizer, decodes, device)
    paths = official_paths(bench, forget)
    out_dir = work / "official"
    args = argparse.Namespace(
        model_id=model_id,
        output_folder=str(out_dir),
        output_file="compare",
        forget_ratio=forget,
        data_split_folder=str(bench),
        few_shot_data=str(paths["few_shot"]),
        test_data=str(paths["test"]),
        celebrity_data=str(paths["celebrity"]),
        cache_path=model_dir,
        pretrain=False,
    )
    records: dict[tuple, dict] = {}
    for set_name in sets:
        mode = OFFICIAL_MODE[set_name]
        rows = official_rows(bench, set_name, forget)
        extra = {"forget_parquet_file": str(paths["forget"])} if set_name == "test" else {}
        for task in TASKS:
            kwargs = dict(
                parquet_file=str(paths[set_name]),
                processor=proc,
                tokenizer=tok,
                model=model,
                args=args,
                mode=mode,
                **extra,
            )
            if task != "generation":
                kwargs["few_shot_parquet_file"] = str(paths["few_shot"])
            before, rouge[:] = rng.samples, []
            getattr(module, OFFICIAL_FUNCTION[task])(**kwargs)
            if task != "generation" and rng.samples != before + 1:
                raise RuntimeError(f"official {set_name}/{task}: expected one example draw, saw {rng.samples - before}")
            gen_json = None
            if task == "generation":
                gen_json = json.loads((out_dir / f"{mode}_generation_results.json").read_text())
            records.update(
                assemble(
                    set_name, task, question_order(rows, task), printer.take(), decodes.take(), list(rouge), gen_json
                )
            )
    with open(out_dir / "records.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"key": list(key), **rec}) + "\n" for key, rec in records.items())
    return records, {
        "decode": "rebuild" if rebuild else "raw",
        "example_draws": rng.samples,
        "test_image_draws": rng.choices,
    }


# ============================================================================ our run


def key_of(sample: dict) -> tuple:
    index = sample["qid"].rsplit("/", 1)[1]
    return (sample["set"], str(sample["profile_id"]), sample["task"], sample["mode"], int(index))


def our_record(sample: dict) -> dict:
    """A samples.jsonl line as the fields compared (the answer as mmunlearn.harness.core.prompts extracts it)."""
    from mmunlearn.harness.core.prompts import extract_answer

    extra, scores, response = sample.get("extra") or {}, sample.get("scores") or {}, sample["response"]
    rec = {"response": response, "answer": extra.get("answer", extract_answer(response))}
    if sample["task"] == "classification":
        rec.update(letter=extra.get("letter"), correct=scores.get("accuracy") == 1.0)
    elif sample["task"] == "cloze":
        rec["correct"] = None if scores.get("accuracy") is None else scores["accuracy"] == 1.0
    else:
        rec["rougeL"] = scores.get("rougeL")
    return rec


def read_samples(path: Path) -> dict[tuple, dict]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sample = json.loads(line)
            if not (sample.get("extra") or {}).get("excluded"):
                out[key_of(sample)] = our_record(sample)
    return out


def run_ours(model_dir: str, bench: Path, forget: int, sets, work: Path, batch_size=None) -> dict[tuple, dict]:
    from mmunlearn.harness.app.runner import RunConfig, run_benchmark

    out = work / "ours"
    cfg = RunConfig(
        model=model_dir,
        bench=str(bench),
        forget=forget,
        method="vanilla",
        shots=0,
        test_images="first",
        judge=None,
        sets=tuple(sets),
        tasks=TASKS,
        device="cpu",
        batch_size=batch_size,
    )
    run_benchmark(cfg, out, progress=False)
    return read_samples(out / "samples.jsonl")


def our_prompts(model, model_dir: str, bench: Path, forget: int, sets) -> dict[tuple, str]:
    """Our full prompt string per question: Task.requests + the adapter's vlm.prompt(req)."""
    from transformers import AutoProcessor

    from mmunlearn.harness.core.bench import load_benchmark
    from mmunlearn.harness.core.model import wrap_vlm
    from mmunlearn.harness.core.records import ImageDecoder
    from mmunlearn.harness.core.contracts import get_task
    from mmunlearn.harness.core.contracts import TaskContext

    b = load_benchmark(str(bench), forget, test_images="first")
    vlm = wrap_vlm(model, AutoProcessor.from_pretrained(model_dir), source=model_dir)
    out = {}
    for set_name in sets:
        for task in TASKS:
            questions = b.questions(sets=[set_name], tasks=[task])
            prep = get_task(task).requests(vlm, questions, TaskContext(shots=0), ImageDecoder())
            for q, req in zip(prep.kept, prep.requests):
                out[(q.set, q.profile_id, q.task, q.mode, int(q.qid.rsplit("/", 1)[1]))] = vlm.prompt(req)
    return out


# ============================================================================ comparison


def agree(task: str, official: dict, ours: dict) -> bool:
    if task == "classification":
        return official.get("letter") == ours.get("letter")
    if task == "cloze":
        return official.get("correct") == ours.get("correct")
    a, b = official.get("rougeL"), ours.get("rougeL")
    return (
        official.get("answer") == ours.get("answer")
        and a is not None
        and b is not None
        and math.isclose(a, b, rel_tol=0.0, abs_tol=ROUGE_TOL)
    )


def metric(task: str, records: list[dict]) -> float | None:
    """Accuracy (classification, cloze) or mean ROUGE-L (generation) of one side."""
    values = [r.get("rougeL") if task == "generation" else float(bool(r.get("correct"))) for r in records]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def compare(official: dict[tuple, dict], ours: dict[tuple, dict], sets=SETS, tasks=TASKS) -> list[dict]:
    """One cell per set x task x mode (see the module docstring)."""
    cells = []
    for s in sets:
        for t in tasks:
            for m in MODES:
                o = {k: v for k, v in official.items() if k[0] == s and k[2] == t and k[3] == m}
                u = {k: v for k, v in ours.items() if k[0] == s and k[2] == t and k[3] == m}
                keys = sorted(set(o) | set(u), key=lambda k: (k[1], k[4]))
                both = [k for k in keys if k in o and k in u]
                with_prompts = [k for k in both if o[k].get("prompt") is not None and u[k].get("prompt") is not None]
                same_prompt = [k for k in with_prompts if o[k]["prompt"] == u[k]["prompt"]]
                agreeing = [k for k in both if agree(t, o[k], u[k])]
                same_response = [k for k in both if o[k].get("response") == u[k].get("response")]
                cells.append(
                    {
                        "set": s,
                        "task": t,
                        "mode": m,
                        "n": len(keys),
                        "n_official": len(o),
                        "n_ours": len(u),
                        "prompts_identical": len(same_prompt) / len(with_prompts) if with_prompts else None,
                        "agreement": len(agreeing) / len(keys) if keys else None,
                        "responses_identical": len(same_response) / len(both) if both else None,
                        "metric_official": metric(t, list(o.values())),
                        "metric_ours": metric(t, list(u.values())),
                        "disagreeing": [list(k) for k in keys if k not in agreeing],
                        "prompt_differs": [list(k) for k in with_prompts if k not in same_prompt],
                    }
                )
    return cells


def failing(cells: list[dict], threshold: float) -> list[dict]:
    return [c for c in cells if c["agreement"] is not None and c["agreement"] < threshold]


def format_table(cells: list[dict], threshold: float) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.3f}"

    head = f"{'set':<10} {'task':<15} {'mode':<11} {'n':>5} {'prompts=':>9} {'agree':>7}  {'official':>8} {'ours':>8}"
    lines = [head, "-" * len(head)]
    for c in cells:
        flag = "  <-- below" if c["agreement"] is not None and c["agreement"] < threshold else ""
        n = f"{c['n']}" if c["n_official"] == c["n_ours"] == c["n"] else f"{c['n']}*"
        lines.append(
            f"{c['set']:<10} {c['task']:<15} {c['mode']:<11} {n:>5} {pct(c['prompts_identical']):>9} "
            f"{pct(c['agreement']):>7}  {pct(c['metric_official']):>8} {pct(c['metric_ours']):>8}{flag}"
        )
    lines.append(
        "prompts= share of identical prompt strings; agree: classification same letter, cloze same "
        "correctness, generation same answer and ROUGE-L; official/ours: accuracy (generation: mean "
        "ROUGE-L); n* = a question on one side only"
    )
    return "\n".join(lines)


def format_examples(cells: list[dict], official: dict, ours: dict, threshold: float, show: int) -> str:
    """Differing questions of failing cells and of cells whose prompts differ."""
    parts = []
    for c in cells:
        keys = c["disagreeing"] if c in failing(cells, threshold) else []
        keys = keys + [k for k in c["prompt_differs"] if k not in keys]
        for k in keys[:show]:
            k = tuple(k)
            o, u = official.get(k, {}), ours.get(k, {})
            op, up = o.get("prompt"), u.get("prompt")
            parts.append(
                "\n".join(
                    [
                        f"--- {'/'.join(map(str, k))}",
                        f"official prompt: {op!r}",
                        f"our prompt:      {'(identical)' if op == up and op is not None else repr(up)}",
                        f"official response: {o.get('response')!r} -> {_verdict(k[2], o)}",
                        f"our response:      {u.get('response')!r} -> {_verdict(k[2], u)}",
                    ]
                )
            )
    return "\n".join(parts)


def _verdict(task: str, rec: dict) -> str:
    if not rec:
        return "(no such question)"
    if task == "classification":
        return f"letter {rec.get('letter')!r}"
    if task == "cloze":
        return f"answer {rec.get('answer')!r} correct={rec.get('correct')}"
    return f"answer {rec.get('answer')!r} ROUGE-L={rec.get('rougeL')}"


# ============================================================================ main


def parse_args(argv=None):
    from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", default=DEFAULT_OFFICIAL, help="eval.py, its folder, or a git dir (HEAD:eval.py)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a saved LLaVA folder")
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="MLLMU-Bench layout folder (built if absent)")
    p.add_argument("--forget", type=int, default=5, choices=(5, 10, 15))
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--model-id", default=DEFAULT_MODEL_ID, help="args.model_id for eval.py (must start with llava)")
    p.add_argument("--decode", default="auto", choices=("auto", "rebuild", "raw"), help="see the docstring, patch 5")
    p.add_argument("--batch-size", type=int, default=None, help="our harness's batch size (default: its own)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-agreement", type=float, default=0.99)
    p.add_argument("--show", type=int, default=3, help="differing examples printed per cell")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--log", help="write everything eval.py printed here")
    p.add_argument("--work", help="keep both runs' files here (default: a temporary folder)")
    args = p.parse_args(argv)
    if not args.model_id.startswith("llava"):
        p.error("--model-id must start with 'llava' (eval.py's LLaVA branches)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        module, label = load_official(args.official)
    except Unusable as exc:
        print(f"compare_official: {exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    bench = Path(args.bench)
    if not bench.exists():
        from mmunlearn.harness.embedded.minibench import build_minibench

        print(f"building the mini-bench into {bench} (seed 0)", file=sys.stderr)
        build_minibench(bench, seed=0)
    sets = [s for s in SETS if s in args.sets]
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        log = stack.enter_context(open(args.log, "w", encoding="utf-8")) if args.log else None
        print(f"official: {label}\nmodel: {args.model}\nbench: {bench} (forget {args.forget})", file=sys.stderr)
        print("running the official functions ...", file=sys.stderr)
        official, info = run_official(
            module, args.model, bench, args.forget, sets, work, args.decode, args.model_id, log
        )
        print(f"official decode: {info['decode']}; running our harness ...", file=sys.stderr)
        ours = run_ours(args.model, bench, args.forget, sets, work, args.batch_size)
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    for key, prompt in our_prompts(model, args.model, bench, args.forget, sets).items():
        if key in ours:
            ours[key]["prompt"] = prompt
    cells = compare(official, ours, sets)
    print(format_table(cells, args.min_agreement))
    examples = format_examples(cells, official, ours, args.min_agreement, args.show)
    if examples:
        print("\nDiffering questions:\n" + examples)
    bad = failing(cells, args.min_agreement)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "official": label,
                    "model": args.model,
                    "bench": str(bench),
                    "forget": args.forget,
                    "sets": sets,
                    "official_decode": info["decode"],
                    "min_agreement": args.min_agreement,
                    "ok": not bad,
                    "cells": cells,
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
    print(f"\n{'FAIL' if bad else 'OK'}: {len(bad)} of {len(cells)} cells agree below {args.min_agreement}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
