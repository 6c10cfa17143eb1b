"""scripts/compare_official.py: its patches, alignment and agreement logic on synthetic inputs
(no official code needed); the end-to-end check against the official eval.py runs only where
its mirror (or $MLLMU_BENCH_OFFICIAL) and eval.py's extra imports (scikit-learn, nltk) exist."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_official.py"


@pytest.fixture(scope="module")
def co():
    spec = importlib.util.spec_from_file_location("compare_official", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- synthetic data

CITIES = {"A": "Oslo", "B": "Lima", "C": "Paris", "D": "Rome"}
ROWS = [
    {
        "ID": "7",
        "Classification_Task": {
            "Image_Textual_Questions": [
                {"Question": "Where was this person born?", "Options": CITIES, "Correct_Answer": "B"}
            ],
            "Pure_Text_Questions": [
                {"Question": "Where was Ann Lee born?", "Options": CITIES, "Correct_Answer": "B"},
                {
                    "Question": "What is the job of Ann Lee?",
                    "Options": {"A": "pilot", "B": "nurse", "C": "baker", "D": "singer"},
                    "Correct_Answer": "A",
                },
            ],
        },
        "Mask_Task": [
            {"Type": "Pure_Text", "Question": "Ann Lee was born in __.", "Ground_Truth": "Lima"},
            {"Type": "Image_Textual", "Question": "This person works as a __.", "Ground_Truth": "pilot"},
            {"Type": "Pure_Text", "Question": "Ann Lee works as a __.", "Ground_Truth": "pilot"},
        ],
        "Generation_Task": [
            {"Type": "Image_Textual", "Question": "Where was this person born?", "Ground_Truth": "In Lima."},
            {"Type": "Pure_Text", "Question": "Where was Ann Lee born?", "Ground_Truth": "In Lima."},
        ],
    },
]


def _options(q):
    return "\n".join(f"{k}: {v}" for k, v in q["Options"].items())


def classification_prints(rows, answers):
    """What eval.py's evaluate_classification prints per question (zero-shot)."""
    calls, it = [("########## Classification Task Starts ##########",)], iter(answers)
    for row in rows:
        for key, head in (("Image_Textual_Questions", "USER: <image>\n"), ("Pure_Text_Questions", "USER:\n")):
            for q in row["Classification_Task"][key]:
                letter = next(it)
                prompt = (
                    f"{head}{q['Question']}\n{_options(q)}\n"
                    "Just give ONE letter representing the answer directly.\nASSISTANT:"
                )
                calls += [
                    ("Prompt: ", prompt),
                    ("Model Answer: ", letter),
                    ("Correct Answer: ", q["Correct_Answer"]),
                    ("The model answer is: ", letter == q["Correct_Answer"]),
                    ("\n",),
                ]
    return calls


# ----------------------------------------------------------------------------- patches


def test_zero_shot_random_draws_no_examples_and_the_first_image(co):
    rng = co.ZeroShotRandom()
    assert rng.sample(["7", "21"], 2) == [] and rng.choice(["first", "second"]) == "first"
    assert (rng.samples, rng.choices) == (1, 1)


def test_prompt_overlap_finds_the_tokens_eval_py_sliced_off(co):
    assert co.prompt_overlap([1, 2, 3, 4], [3, 4, 9, 8]) == 2  # outputs[0][2:]
    assert co.prompt_overlap([1, 2, 3, 4], [1, 2, 3, 4, 9]) == 0
    with pytest.raises(RuntimeError):
        co.prompt_overlap([1, 2, 3, 4], [5, 6, 7])


class FakeBatch(dict):
    def to(self, device):
        self.moved_to = device
        return self


class LowercasingTokenizer:
    """Word-level and lowercasing, like the tiny LLaVA's: "ASSISTANT:" does not decode back."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, return_tensors=None, add_special_tokens=True, **_):
        words = text.lower().replace(":", " :").split()
        ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in words]
        return FakeBatch(input_ids=torch.tensor([ids]) if return_tensors == "pt" else ids)

    def decode(self, ids, skip_special_tokens=False):
        words = {v: k for k, v in self.vocab.items()}
        return " ".join(words[int(i)] for i in ids)


def test_encoder_proxy_moves_to_cpu_and_rebuilds_the_decoded_prompt(co):
    tok = LowercasingTokenizer()
    assert co.decode_is_lossy(tok)
    log = co.DecodeLog(rebuild=True)
    proxy = co.EncoderProxy(tok, log, torch.device("cpu"))
    prompt = "USER:\nWhere was Ann Lee born?\nASSISTANT:"
    inputs = proxy(prompt, return_tensors="pt").to("cuda")
    assert inputs.moved_to == torch.device("cpu")
    answer = tok("B lima", return_tensors="pt")["input_ids"][0]
    outputs = torch.cat([inputs["input_ids"][0], answer])[None]
    text = proxy.decode(outputs[0][2:], skip_special_tokens=True)
    assert text == f"{prompt} b lima"
    assert text.split("ASSISTANT:")[1].strip() == "b lima"  # eval.py's extraction now sees the response
    assert log.take() == ["b lima"] and log.take() == []

    raw = co.DecodeLog(rebuild=False)
    proxy = co.EncoderProxy(tok, raw, torch.device("cpu"))
    inputs = proxy(text=prompt, return_tensors="pt").to("cuda")
    decoded = proxy.decode(torch.cat([inputs["input_ids"][0], answer])[2:])
    assert "ASSISTANT:" not in decoded and raw.take() == ["b lima"]


def test_print_capture_keeps_objects_and_logs_text(co, tmp_path):
    with open(tmp_path / "log.txt", "w") as log:
        p = co.PrintCapture(log)
        p("Model Answer: ", None)
    assert p.take() == [("Model Answer: ", None)] and p.calls == []
    assert (tmp_path / "log.txt").read_text() == "Model Answer:  None\n"


def test_recording_rouge_scores_as_rouge_score_does(co):
    from rouge_score import rouge_scorer

    seen = []
    scorer = co.recording_rouge(seen).RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    result = scorer.score("He was born in Lima.", "born in lima")
    real = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score("He was born in Lima.", "born in lima")
    assert seen == [{"target": "He was born in Lima.", "prediction": "born in lima", "rougeL": real["rougeL"].fmeasure}]
    assert result["rougeL"].fmeasure == real["rougeL"].fmeasure


# ----------------------------------------------------------------------------- alignment


def test_question_order_follows_eval_py_loops_with_indices_per_mode(co):
    cls = co.question_order(ROWS, "classification")
    assert [(q["mode"], q["index"], q["answer"]) for q in cls] == [
        ("image_text", 0, "B"),
        ("text_only", 0, "B"),
        ("text_only", 1, "A"),
    ]
    cloze = co.question_order(ROWS, "cloze")
    assert [(q["mode"], q["index"]) for q in cloze] == [("text_only", 0), ("image_text", 0), ("text_only", 1)]
    assert {q["profile"] for q in cloze} == {"7"}


def test_assemble_classification_keys_records_and_checks_alignment(co):
    expected = co.question_order(ROWS, "classification")
    calls = classification_prints(ROWS, ["B", None, "C"])
    records = co.assemble("forget", "classification", expected, calls, ["B", "lima", "C: baker"])
    assert list(records) == [
        ("forget", "7", "classification", "image_text", 0),
        ("forget", "7", "classification", "text_only", 0),
        ("forget", "7", "classification", "text_only", 1),
    ]
    first = records[("forget", "7", "classification", "image_text", 0)]
    assert first["letter"] == "B" and first["correct"] is True and first["prompt"].startswith("USER: <image>\n")
    assert records[("forget", "7", "classification", "text_only", 0)]["letter"] is None

    with pytest.raises(RuntimeError, match="counts differ"):  # a skipped question
        co.assemble("forget", "classification", expected, calls[:-5], ["B", "lima"])
    shifted = classification_prints(ROWS, ["B", None, "C"])
    shifted[3] = ("Correct Answer: ", "D")
    with pytest.raises(RuntimeError, match="line up"):
        co.assemble("forget", "classification", expected, shifted, ["B", "lima", "C"])
    with_example = [
        ("Prompt: ", "USER:\nQuestion: x\nCorrect Answer: A\n" + c[1]) if c[0] == "Prompt: " else c for c in calls
    ]
    with pytest.raises(RuntimeError, match="in-context example"):
        co.assemble("forget", "classification", expected, with_example, ["B", "lima", "C"])


def test_assemble_cloze_and_generation(co):
    expected = co.question_order(ROWS, "cloze")
    calls = []
    for q, answer in zip(ROWS[0]["Mask_Task"], ["lima", "baker", "a pilot"]):
        head = "USER: <image>\n" if q["Type"] == "Image_Textual" else "USER:\n"
        prompt = f"{head}{q['Question'].replace('__', '[Blank]')}\nPlease **ONLY** provide ...\nASSISTANT:"
        calls += [
            ("Prompt: ", prompt),
            ("Model Answer: ", answer),
            ("Correct Answer: ", q["Ground_Truth"]),
            ("The model answer is: ", q["Ground_Truth"].lower() in answer.lower()),
        ]
    cloze = co.assemble("test", "cloze", expected, calls, ["lima", "baker", "a pilot"])
    assert [r["correct"] for r in cloze.values()] == [True, False, True]
    assert ("test", "7", "cloze", "text_only", 1) in cloze

    expected = co.question_order(ROWS, "generation")
    calls, entries, rouge = [], [], []
    for q in ROWS[0]["Generation_Task"]:
        calls += [
            ("###### Generation Question: ######", q["Question"]),
            ("###### Generation Prompt: ######", f"USER: {q['Question']}\nASSISTANT:"),
            ("###### Generation ASSISTANT: ######", "in lima"),
            ("###### Generation Ground Truth: ######", q["Ground_Truth"]),
        ]
        entries.append(
            {
                "image_id": "7",
                "question type": q["Type"],
                "question": q["Question"],
                "generated_answer": "in lima",
                "ground_truth": q["Ground_Truth"],
            }
        )
        rouge.append({"target": q["Ground_Truth"], "prediction": "in lima", "rougeL": 1.0})
    gen = co.assemble(
        "test", "generation", expected, calls, ["in lima", "in lima"], rouge, {"Generation_Questions": entries}
    )
    assert gen[("test", "7", "generation", "text_only", 0)] == {
        "prompt": "USER: Where was Ann Lee born?\nASSISTANT:",
        "response": "in lima",
        "answer": "in lima",
        "rougeL": 1.0,
    }
    entries[1] = {**entries[1], "image_id": "8"}
    with pytest.raises(RuntimeError, match="line up"):
        co.assemble(
            "test", "generation", expected, calls, ["in lima", "in lima"], rouge, {"Generation_Questions": entries}
        )


def test_read_samples_keys_our_results_and_skips_excluded(co, tmp_path):
    lines = [
        {
            "qid": "test/7/classification/image_text/0",
            "set": "test",
            "task": "classification",
            "mode": "image_text",
            "profile_id": "7",
            "response": "B. Lima",
            "scores": {"accuracy": 1.0},
            "extra": {"letter": "B"},
        },
        {
            "qid": "test/7/cloze/text_only/1",
            "set": "test",
            "task": "cloze",
            "mode": "text_only",
            "profile_id": "7",
            "response": "pilot ASSISTANT: x",
            "scores": {"accuracy": 1.0, "exact_match": 1.0},
            "extra": {"answer": "pilot"},
        },
        {
            "qid": "test/7/generation/image_text/0",
            "set": "test",
            "task": "generation",
            "mode": "image_text",
            "profile_id": "7",
            "response": "in lima",
            "scores": {"rougeL": 0.5},
            "extra": {"judge": "skipped"},
        },
        {
            "qid": "test/9/cloze/text_only/0",
            "set": "test",
            "task": "cloze",
            "mode": "text_only",
            "profile_id": "9",
            "response": "",
            "scores": {"accuracy": None},
            "extra": {"excluded": "in-context example profile"},
        },
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = co.read_samples(path)
    assert set(got) == {
        ("test", "7", "classification", "image_text", 0),
        ("test", "7", "cloze", "text_only", 1),
        ("test", "7", "generation", "image_text", 0),
    }
    assert got[("test", "7", "classification", "image_text", 0)]["letter"] == "B"
    assert got[("test", "7", "cloze", "text_only", 1)] == {
        "response": "pilot ASSISTANT: x",
        "answer": "pilot",
        "correct": True,
    }
    assert got[("test", "7", "generation", "image_text", 0)]["rougeL"] == 0.5


# ----------------------------------------------------------------------------- agreement


def _key(task, mode="text_only", index=0, pid="7", set_name="forget"):
    return (set_name, pid, task, mode, index)


def test_agreement_per_task(co):
    assert co.agree("classification", {"letter": None}, {"letter": None})
    assert not co.agree("classification", {"letter": "A"}, {"letter": None})
    assert co.agree("cloze", {"correct": True, "answer": "a pilot"}, {"correct": True, "answer": "pilot"})
    g = {"answer": "in lima", "rougeL": 0.5}
    assert co.agree("generation", g, {"answer": "in lima", "rougeL": 0.5 + 1e-12})
    assert not co.agree("generation", g, {"answer": "in lima.", "rougeL": 0.5})
    assert not co.agree("generation", g, {"answer": "in lima", "rougeL": 0.6})


def test_compare_cells_threshold_and_table(co):
    official, ours = {}, {}
    for i in range(100):
        official[_key("classification", index=i)] = {"prompt": f"p{i}", "response": "B", "letter": "B", "correct": True}
        ours[_key("classification", index=i)] = {"prompt": f"p{i}", "response": "B", "letter": "B", "correct": True}
    ours[_key("classification", index=3)] = {"prompt": "other", "response": "C", "letter": "C", "correct": False}
    official[_key("cloze", mode="image_text")] = {"prompt": "q", "response": "x", "answer": "x", "correct": False}
    ours[_key("cloze", mode="image_text", index=1)] = {"prompt": "q", "response": "x", "answer": "x", "correct": False}

    cells = {(c["task"], c["mode"]): c for c in co.compare(official, ours, sets=["forget"])}
    cls = cells[("classification", "text_only")]
    assert (cls["n"], cls["agreement"], cls["prompts_identical"], cls["responses_identical"]) == (100, 0.99, 0.99, 0.99)
    assert cls["disagreeing"] == [list(_key("classification", index=3))]
    assert cls["metric_official"] == 1.0 and cls["metric_ours"] == 0.99
    cloze = cells[("cloze", "image_text")]  # one question on each side, none matched
    assert (cloze["n"], cloze["n_official"], cloze["n_ours"], cloze["agreement"]) == (2, 1, 1, 0.0)
    assert cells[("generation", "text_only")]["agreement"] is None  # empty: neither passes nor fails

    all_cells = list(cells.values())
    assert co.failing(all_cells, 0.99) == [cloze]
    table = co.format_table(all_cells, 0.99)
    assert "0.990" in table and "<-- below" in table and "2*" in table
    examples = co.format_examples(all_cells, official, ours, 0.99, show=3)
    assert "forget/7/cloze/image_text/0" in examples and "(no such question)" in examples
    assert "'other'" in examples  # the classification prompt that differs is shown too


# ----------------------------------------------------------------------------- usability


def test_missing_scikit_learn_says_pip_install_and_exits_2(co, monkeypatch, capsys):
    monkeypatch.setattr(co, "missing_packages", lambda: ["scikit-learn"])
    assert co.main(["--official", "/nonexistent"]) == 2
    assert "pip install scikit-learn" in capsys.readouterr().err


def test_read_official_from_a_file_a_folder_or_nowhere(co, tmp_path):
    (tmp_path / "eval.py").write_text("X = 1\n")
    assert co.read_official(str(tmp_path / "eval.py"))[0] == "X = 1\n"
    assert co.read_official(str(tmp_path))[0] == "X = 1\n"
    with pytest.raises(co.Unusable):
        co.read_official(str(tmp_path / "missing"))


def test_model_id_must_select_the_llava_branches(co):
    with pytest.raises(SystemExit):
        co.parse_args(["--model-id", "HuggingFaceM4/idefics2-8b"])


# ----------------------------------------------------------------------------- against the official code


def _official_available(co) -> str | None:
    path = Path(co.DEFAULT_OFFICIAL)
    if not path.exists():
        return f"no official eval.py mirror at {path}"
    if co.missing_packages():
        return f"eval.py needs {', '.join(co.missing_packages())}"
    return None


@pytest.mark.slow
def test_official_eval_py_and_the_harness_agree_on_the_forget_set(co, tmp_path, capsys):
    reason = _official_available(co)
    if reason:
        pytest.skip(reason)
    rc = co.main(["--sets", "forget", "--json", str(tmp_path / "cmp.json"), "--work", str(tmp_path / "work")])
    report = json.loads((tmp_path / "cmp.json").read_text())
    assert rc == 0 and report["ok"], capsys.readouterr().out
    assert len(report["cells"]) == 6 and all(c["prompts_identical"] == 1.0 for c in report["cells"])
    assert sum(c["n"] for c in report["cells"]) == sum(c["n_official"] for c in report["cells"]) > 0
