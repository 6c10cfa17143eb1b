"""Task plugins: request building, official parsing/scoring edge cases, in-context examples, aggregates."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mmunlearn.harness.core.bench import Benchmark
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.judge import JudgeResult
from mmunlearn.harness.core.prompts import Request, official_prompt, user_text
from mmunlearn.harness.core.records import LETTERS, SETS, Profile, Question
from mmunlearn.harness.core.contracts import (
    TASK_REGISTRY,
    SampleResult,
    Task,
    TaskContext,
    get_task,
    prompt_hash,
    registered_tasks,
)
from mmunlearn.tasks.classification import parse_letter
from mmunlearn.tasks.cloze import contains_answer, exact_match


def png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


IMAGE = png()
OPTIONS = {"A": "doctor", "B": "painter", "C": "teacher", "D": "pilot"}


def question(
    task, mode="text_only", *, set="forget", pid="p1", index=0, text=None, answer="B", options=None, image=IMAGE
):
    text = text or f"{task} question {pid} {mode} {index}" + (" is __ ." if task == "cloze" else "")
    if task == "classification":
        options = options or OPTIONS
    return Question(
        f"{set}/{pid}/{task}/{mode}/{index}",
        set,
        task,
        mode,
        pid,
        text,
        answer,
        options,
        image if mode == "image_text" else None,
    )


class FakeVLM:
    """Canned answers keyed by a substring of the request text; records every request it gets."""

    def __init__(self, answers=None, default="", logprobs=None, style="USER: "):
        self.answers = answers or {}
        self.default = default
        self.logprobs = logprobs  # callable(req, options) -> list[float]
        self.style = style
        self.generated, self.scored, self.prefixes = [], [], []

    def prompt(self, req):
        return f"{req.system or ''}{self.style}\n{official_prompt(req)}"

    def _answer(self, req):
        for key, answer in self.answers.items():
            if key in req.text:  # the scored question (examples are apart, in req.examples)
                return answer
        return self.default

    def generate(self, reqs, max_new_tokens=50, batch_size=None, desc=None):
        self.generated.append((list(reqs), max_new_tokens, batch_size))
        return [self._answer(r) for r in reqs]

    def option_logprobs(self, reqs, options, batch_size=None, prefixes=None):
        self.scored.append((list(reqs), [list(o) for o in options]))
        self.prefixes.append(prefixes)
        return [self.logprobs(r, o) for r, o in zip(reqs, options)]


class NoPromptVLM(FakeVLM):
    prompt = None  # an adapter without prompt(): hash falls back to request text + mode


FULL_IMAGE = png((10, 200, 10))  # the Full_Set image: in-context examples are read from Full_Set


def bench_with(set_name="retain", n_profiles=6, per_profile=2, task="classification"):
    """A Benchmark whose `set_name` has n profiles with `task` questions in both modes; its
    Full_Set holds the same profiles (other image, question texts marked "full")."""

    def profile(i, s, image):
        return Profile(
            id=f"p{i}",
            set=s,
            biography="",
            image=image,
            questions=tuple(
                question(
                    task,
                    mode,
                    set=s,
                    pid=f"p{i}",
                    index=j,
                    answer=LETTERS[(i + j) % 4],
                    image=image,
                    text=f"{task} {s} p{i} {mode} {j}" + (" is __ ." if task == "cloze" else ""),
                )
                for mode in ("image_text", "text_only")
                for j in range(per_profile)
            ),
        )

    profiles = {s: () for s in SETS}
    profiles[set_name] = tuple(profile(i, set_name, IMAGE) for i in range(n_profiles))
    full = {f"p{i}": profile(i, "full", FULL_IMAGE) for i in range(n_profiles)}
    return Benchmark(source="fake", forget=5, fingerprint="0" * 64, profiles=profiles, full_set=full)


# --------------------------------------------------------------------------- registry / base


def test_registry_has_the_three_tasks_and_unknown_names_list_them():
    assert {"classification", "generation", "cloze"} <= set(registered_tasks())
    assert get_task("cloze").name == "cloze"
    with pytest.raises(ConfigError, match="unknown task 'clasification'.*classification.*cloze.*generation"):
        get_task("clasification")


def test_register_task_adds_a_one_file_task_and_refuses_a_name_clash(monkeypatch):
    monkeypatch.setattr("mmunlearn.harness.core.contracts.TASK_REGISTRY", dict(TASK_REGISTRY))
    from mmunlearn.harness.core import contracts as base

    @base.register_task
    class Echo(Task):
        name = "echo"
        reads = "cloze"
        metrics = ("len",)

    assert isinstance(base.get_task("echo"), Echo)
    with pytest.raises(TypeError, match="already registered"):

        @base.register_task
        class Other(Task):
            name = "echo"
            reads = "cloze"

    # Question types are the benchmarks' own: a task may read any, and a run refuses a task whose
    # question type its benchmark does not have (before anything is loaded).
    from mmunlearn.harness.app.runner import Progress, RunConfig, resolve_plugins

    cfg = RunConfig(tasks=("clear_caption",))
    cfg.validate()
    with pytest.raises(ConfigError, match="reads caption questions, which mllmu-bench does not have"):
        resolve_plugins(cfg, Progress(False))

    with pytest.raises(TypeError, match="not among its metrics"):

        @base.register_task
        class BadHeadline(Task):
            name = "echo3"
            reads = "cloze"
            metrics = ("a",)
            headline = ("b",)


def test_sample_result_round_trips_through_dict():
    s = SampleResult("q", "forget", "cloze", "text_only", "p1", "h" * 64, "resp", {"accuracy": 1.0}, {"k": [1]})
    assert SampleResult.from_dict(s.to_dict()) == s


def test_prompt_hash_covers_full_model_input_mode_and_images():
    from mmunlearn.harness.core.prompts import Example

    req = Request("what is the job of X ?", task="cloze")
    a, b = FakeVLM(style="USER: "), FakeVLM(style="SYSTEM: be private\nUSER: ")
    assert prompt_hash(a, req, "text_only") == prompt_hash(FakeVLM(style="USER: "), req, "text_only")
    assert prompt_hash(a, req, "text_only") != prompt_hash(b, req, "text_only")  # uses vlm.prompt()
    shot = Request(req.text, task="cloze", examples=(Example("x is [Blank].\nCorrect Answer: y"),))
    assert prompt_hash(a, shot, "text_only") != prompt_hash(a, req, "text_only")  # examples are input too
    plain = NoPromptVLM()
    assert prompt_hash(plain, req, "text_only") != prompt_hash(plain, req, "image_text")
    assert prompt_hash(plain, req, "image_text", [png((1, 2, 3))]) != prompt_hash(plain, req, "image_text", [IMAGE])
    # every image counts, examples' first
    two = prompt_hash(plain, req, "image_text", [FULL_IMAGE, IMAGE])
    assert two != prompt_hash(plain, req, "image_text", [IMAGE])
    assert two != prompt_hash(plain, req, "image_text", [IMAGE, FULL_IMAGE])


def test_a_task_refuses_questions_of_another_task():
    with pytest.raises(ValueError, match="cloze"):
        get_task("generation").evaluate(FakeVLM(), [question("cloze")], TaskContext())


def test_task_context_shots():
    assert TaskContext().shots == 0  # a bare context is zero-shot; the runner passes "official"
    assert TaskContext(shots="Official").shots == "official" and TaskContext(shots="3").shots == 3
    for bad in (-1, "foo", None):
        with pytest.raises(ConfigError, match="shots"):
            TaskContext(shots=bad)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "response,letter",
    [
        ("B", "B"),
        ("b", "B"),
        ("B. Paris", "B"),
        ("B: painter", "B"),
        ("B)", "B"),
        ("  \n C", "C"),
        ("", None),
        ("   ", None),
        ("E", None),
        ("(B)", None),
        ("The answer is B", None),
        ("Answer: C", "A"),
        ("ASSISTANT: D", None),
        ("B\nASSISTANT: C", "B"),  # text after a generated ASSISTANT: is cut
        ("Because of the image", "B"),
        ("cooking", "C"),  # official quirk, kept
    ],
)
def test_parse_letter_follows_the_official_first_character_rule(response, letter):
    assert parse_letter(response) == letter


def test_classification_scores_generated_letters_and_builds_official_requests():
    qs = [question("classification", m, pid=p, answer="B") for m in ("image_text", "text_only") for p in ("p1", "p2")]
    qs.append(question("classification", pid="p3", answer="C"))
    vlm = FakeVLM({"p1": "b", "p2": "B. painter", "p3": ""})
    samples = get_task("classification").evaluate(vlm, qs, TaskContext(max_new_tokens=7, batch_size=3))

    reqs, max_new, batch = vlm.generated[0]
    assert (max_new, batch) == (7, 3)
    for q, r in zip(qs, reqs):
        assert r.text == user_text("classification", q.mode, q.text, q.options)
        assert r.task == "classification" and r.examples == ()  # zero-shot context
        assert (r.image is not None) == (q.mode == "image_text")
        if r.image is not None:
            assert isinstance(r.image, Image.Image) and r.image.mode == "RGB"
    assert [s.scores["accuracy"] for s in samples] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert samples[-1].extra["letter"] is None and samples[-1].response == ""
    s = samples[0]
    assert (s.qid, s.set, s.task, s.mode, s.profile_id) == (qs[0].qid, "forget", "classification", "image_text", "p1")
    assert s.prompt_hash == prompt_hash(vlm, reqs[0], "image_text", [IMAGE])
    agg = get_task("classification").aggregate(samples)
    assert agg == {
        "accuracy": 0.8,
        "accuracy_loglik": None,
        "accuracy_loglik_text": None,
        "accuracy_loglik_answer": None,
        "accuracy_loglik_frame": None,
        "n": 5,
    }


def test_loglik_scorers_take_the_argmax_over_letters_and_length_normalised_texts():
    options = {"A": "x", "B": "a much longer option", "C": "y", "D": "z"}
    q = question("classification", answer="B", options=options)

    def logprobs(req, opts):
        if opts == list(LETTERS):
            return [-3.0, -0.5, -2.0, -4.0]  # letters: B is most likely
        # texts: "x" has the highest total but the lowest per-byte log-prob
        return [-1.0, -2.0, -1.5, -1.5]

    vlm = FakeVLM(logprobs=logprobs)
    [s] = get_task("classification").evaluate(vlm, [q], TaskContext(scorers=("loglik", "loglik_text")))
    assert vlm.generated == []  # the generate scorer was not asked for
    assert vlm.scored[0][1] == [list(LETTERS)]
    assert vlm.scored[1][1] == [[options[x] for x in LETTERS]]
    assert s.scores == {"accuracy_loglik": 1.0, "accuracy_loglik_text": 1.0}
    assert (s.extra["letter_loglik"], s.extra["letter_loglik_text"]) == ("B", "B")
    agg = get_task("classification").aggregate([s])
    assert agg["accuracy"] is None and agg["accuracy_loglik"] == 1.0


def test_loglik_answer_scores_option_texts_as_answers_to_the_bare_question():
    options = {"A": "paris", "B": "a very long wrong option", "C": "rome", "D": "oslo"}
    q = question("classification", answer="C", options=options)
    vlm = FakeVLM(logprobs=lambda req, opts: [-4.0, -3.0, -0.4, -4.0])  # total -3.0 on B, per byte far lower
    [s] = get_task("classification").evaluate(vlm, [q], TaskContext(scorers=("loglik_answer",)))
    [(reqs, opts)] = vlm.scored
    assert reqs[0].text == q.text  # the bare question: no option list, no letter instruction
    assert (reqs[0].image is not None) == (q.mode == "image_text")
    assert opts == [[options[x] for x in LETTERS]]
    assert s.scores == {"accuracy_loglik_answer": 1.0} and s.extra["letter_loglik_answer"] == "C"


@pytest.mark.parametrize(
    "answer, frame",
    [
        ("This person was born in the city of London.", "This person was born in the city of"),
        ("this person was born in the city of london.", "this person was born in the city of"),  # any case
        ("Paris", ""),  # a bare value: the frame is empty (loglik_answer's position)
        ("She left Londonderry for Paris", "She left Londonderry for"),  # whole words only
        ("born in Berlin, not London", "born in"),  # the first option in the answer
        ("I cannot help with that.", None),  # no option: no frame
        ("", None),
        ("in Rome ASSISTANT: London", None),  # the answer ends at a generated ASSISTANT:, as officially
    ],
)
def test_the_answer_frame_is_the_answer_up_to_its_first_option(answer, frame):
    from mmunlearn.tasks.classification import answer_frame

    assert answer_frame(answer, ["London", "Paris", "Berlin", "Madrid"]) == frame


def test_loglik_frame_scores_the_options_inside_the_models_own_answer():
    options = {"A": "London", "B": "Paris", "C": "Berlin", "D": "Madrid"}
    framed = question("classification", "image_text", index=0, answer="B", options=options)
    bare = question("classification", "image_text", index=1, answer="C", options=options)
    vlm = FakeVLM(
        answers={"question p1 image_text 0": "This person was born in the city of Paris.", "image_text 1": "no idea"},
        logprobs=lambda req, opts: [-5.0, -0.1, -3.0, -5.0] if "0" in req.text else [-5.0, -5.0, -0.2, -5.0],
    )
    samples = get_task("classification").evaluate(vlm, [framed, bare], TaskContext(scorers=("loglik_frame",)))
    [(gen_reqs, _, _)] = vlm.generated
    assert [r.text for r in gen_reqs] == [framed.text, bare.text]  # the bare question is answered first
    assert all(r.task is None and r.image is not None for r in gen_reqs)
    assert vlm.prefixes == [["This person was born in the city of", ""]]  # no frame: the bare position
    assert [s.extra["frame"] for s in samples] == ["This person was born in the city of", None]
    assert [s.scores["accuracy_loglik_frame"] for s in samples] == [1.0, 1.0]
    agg = get_task("classification").aggregate(samples)
    assert agg["accuracy_loglik_frame"] == 1.0 and agg["frame_scored"] == 1 and agg["n"] == 2


def test_unknown_classification_scorer_is_a_config_error():
    with pytest.raises(ConfigError, match="known: generate, loglik, loglik_text, loglik_answer, loglik_frame"):
        get_task("classification").evaluate(FakeVLM(), [question("classification")], TaskContext(scorers=("logprob",)))


def _shot_run(seed, shots=1, mode="text_only", task="classification", vlm=None):
    bench = bench_with("retain", task=task)
    qs = bench.questions(sets=("retain",), tasks=(task,), modes=(mode,))
    vlm = vlm or FakeVLM(default="A")
    samples = get_task(task).evaluate(vlm, qs, TaskContext(seed=seed, shots=shots, bench=bench))
    return bench, qs, vlm, samples


def _chosen(samples):
    kept = [s for s in samples if not s.extra.get("excluded")]
    chosen = kept[0].extra["example_profiles"]
    assert all(s.extra["example_profiles"] == chosen for s in kept)
    return chosen


def test_official_classification_examples_are_seeded_and_their_profiles_are_not_scored():
    bench, qs, vlm, samples = _shot_run(seed=3, shots="official")
    chosen = _chosen(samples)
    assert len(chosen) == 1  # one example profile for classification
    # every question gets a result (the runner checks), but the example profile's are not scored
    assert [s.qid for s in samples] == [q.qid for q in qs]
    excluded = [s for s in samples if s.extra.get("excluded")]
    assert {s.profile_id for s in excluded} == set(chosen) and len(excluded) == 2
    assert all(v is None for s in excluded for v in s.scores.values())
    assert len(vlm.generated[0][0]) == len(qs) - 2  # the model is not asked them
    agg = get_task("classification").aggregate(samples)
    assert agg["n"] == len(qs) - 2
    assert agg["accuracy"] == pytest.approx(sum(q.answer == "A" for q in qs if q.profile_id not in chosen) / agg["n"])
    # the examples are *all* of the example profile's questions of the mode, read from Full_Set
    full = [q for q in bench.full_set[chosen[0]].questions if q.task == "classification" and q.mode == "text_only"]
    expected = tuple(
        f"Question: {q.text}\nA: {q.options['A']}\nB: {q.options['B']}\nC: {q.options['C']}\n"
        f"D: {q.options['D']}\nCorrect Answer: {q.answer}"
        for q in full
    )
    assert len(expected) == 2 and all(" full " in e for e in expected)
    for req, q in zip(vlm.generated[0][0], [q for q in qs if q.profile_id not in chosen]):
        assert tuple(e.text for e in req.examples) == expected
        assert all(e.image is None for e in req.examples)  # text mode: no example image
        assert req.text == user_text("classification", "text_only", q.text, q.options)
    # same seed: same choice and identical model inputs; other seeds: not always the same profile
    assert [s.prompt_hash for s in _shot_run(seed=3, shots="official")[3]] == [s.prompt_hash for s in samples]
    assert len({tuple(_chosen(_shot_run(seed=k, shots="official")[3])) for k in range(8)}) > 1


def test_examples_change_the_prompt_hash():
    zero = {s.qid: s.prompt_hash for s in _shot_run(seed=3, shots=0)[3]}
    official = {s.qid: s.prompt_hash for s in _shot_run(seed=3, shots="official")[3]}
    assert zero.keys() == official.keys() and all(zero[k] != official[k] for k in zero)


def test_image_text_examples_carry_the_full_set_image_before_the_question_image():
    bench, qs, vlm, samples = _shot_run(seed=0, shots=2, mode="image_text")
    assert len(_chosen(samples)) == 2
    assert sum(bool(s.extra.get("excluded")) for s in samples) == 2 * 2
    reqs = vlm.generated[0][0]
    assert len(reqs) == len(qs) - 2 * 2
    for r in reqs:
        assert len(r.examples) == 2 * 2 and r.image is not None
        assert all(isinstance(e.image, Image.Image) and e.source == FULL_IMAGE for e in r.examples)
        assert r.images == [e.image for e in r.examples] + [r.image]
    s = next(s for s in samples if not s.extra.get("excluded"))
    assert s.prompt_hash == prompt_hash(vlm, reqs[0], "image_text", [FULL_IMAGE] * 4 + [IMAGE])


def test_official_cloze_takes_two_profiles_for_llava_and_one_for_idefics2():
    class Arch(FakeVLM):
        arch = "idefics2"

    for vlm, k in ((FakeVLM(), 2), (Arch(), 1)):
        _, qs, vlm, samples = _shot_run(seed=1, shots="official", task="cloze", vlm=vlm)
        assert len(_chosen(samples)) == k
        assert sum(bool(s.extra.get("excluded")) for s in samples) == 2 * k
        assert all(len(r.examples) == 2 * k for r in vlm.generated[0][0])
        assert all(
            e.text.endswith(("Correct Answer: A", "Correct Answer: B", "Correct Answer: C", "Correct Answer: D"))
            for r in vlm.generated[0][0]
            for e in r.examples
        )


def test_generation_has_no_examples_even_with_official_shots():
    _, qs, vlm, samples = _shot_run(seed=0, shots="official", task="generation")
    assert not any(s.extra.get("excluded") for s in samples)
    assert all(r.examples == () for r in vlm.generated[0][0]) and len(vlm.generated[0][0]) == len(qs)
    # and so it needs no benchmark to draw them from
    [s] = get_task("generation").evaluate(FakeVLM(default="x"), [question("generation")], TaskContext(shots="official"))
    assert s.scores["rouge1"] == 0.0


def test_shots_need_the_benchmark_and_enough_profiles():
    q = question("classification", set="retain")
    with pytest.raises(ConfigError, match="TaskContext.bench"):
        get_task("classification").evaluate(FakeVLM(), [q], TaskContext(shots=1))
    with pytest.raises(ConfigError, match="TaskContext.bench"):
        get_task("cloze").evaluate(FakeVLM(), [question("cloze")], TaskContext(shots="official"))
    with pytest.raises(ConfigError, match="7 in-context example profile"):
        get_task("classification").evaluate(FakeVLM(), [q], TaskContext(shots=7, bench=bench_with("retain", 6)))
    # as many example profiles as the set has is allowed (the official random.sample is): nothing left to score
    samples = get_task("classification").evaluate(FakeVLM(), [q], TaskContext(shots=6, bench=bench_with("retain", 6)))
    assert samples[0].extra["excluded"]


# --------------------------------------------------------------------------- generation


class FakeJudge:
    model = "fake-judge"

    def __init__(self, results, available=True):
        self.results, self.available, self.calls = list(results), available, []

    def score_many(self, items, desc=None):
        self.calls.append(list(items))
        return self.results[: len(items)]


def test_generation_rouge_uses_the_stemmer_and_the_official_prompt():
    qs = [
        question("generation", "image_text", pid="p1", answer="Cats running"),
        question("generation", "text_only", pid="p2", answer="She is a painter"),
        question("generation", "text_only", pid="p3", answer="She is a painter"),
    ]
    vlm = FakeVLM({"p1": "  cat runs\n", "p2": "She is a painter", "p3": ""})
    samples = get_task("generation").evaluate(vlm, qs, TaskContext())
    reqs = vlm.generated[0][0]
    assert [r.text for r in reqs] == [user_text("generation", q.mode, q.text) for q in qs]
    assert [r.image is not None for r in reqs] == [True, False, False]
    assert samples[0].response == "  cat runs\n" and samples[0].extra["answer"] == "cat runs"
    assert samples[0].scores["rouge1"] == 1.0  # cats/running stem to cat/run
    assert samples[0].scores["rouge2"] == 1.0  # without the stemmer both would be 0
    assert samples[1].scores == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "bleu": 1.0, "factuality": None}
    assert "answer" not in samples[1].extra  # nothing was cut
    assert samples[2].scores["rougeL"] == 0.0 and samples[2].scores["bleu"] == 0.0
    agg = get_task("generation").aggregate(samples)
    assert agg["factuality"] is None and agg["factuality_scored"] == 0 and agg["factuality_failed"] == 0
    assert agg["n"] == 3 and agg["rouge1"] == pytest.approx(2 / 3)
    assert agg["bleu"] == pytest.approx(sum(s.scores["bleu"] for s in samples) / 3)


@pytest.mark.parametrize(
    "truth,answer",
    [
        ("She works as a painter in Paris", "She works as a painter in Paris"),
        ("She works as a painter in Paris", "she is a painter in Paris ."),
        ("He was born in 1975 in Rome", "born 1975"),
        ("a b c d", "a b x d"),  # no 3- or 4-gram in common: 0 without smoothing
        ("The capital is Paris.", "Paris ."),  # whitespace tokens: "Paris." and "Paris" differ
    ],
)
def test_bleu_is_eval_py_compute_bleu(truth, answer):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from mmunlearn.tasks.generation import bleu

    expected = sentence_bleu([truth.split()], answer.split(), smoothing_function=SmoothingFunction().method1)
    assert bleu(truth, answer) == pytest.approx(expected)


def test_bleu_edge_cases():
    from mmunlearn.tasks.generation import bleu

    assert bleu("She works as a painter", "She works as a painter") == pytest.approx(1.0)
    assert bleu("She works as a painter", "") == 0.0 and bleu("She works as a painter", "  \n ") == 0.0
    assert bleu("a b c d", "a b x d") > 0.0  # smoothing method 1 keeps short partial matches above 0
    assert bleu("The capital is Paris.", "Paris .") < bleu("The capital is Paris.", "Paris.")


def test_generation_factuality_is_the_raw_1_to_10_mean_and_failures_are_counted():
    qs = [question("generation", pid=p, answer="She is a painter") for p in ("p1", "p2", "p3")]
    judge = FakeJudge(
        [JudgeResult(10.0, "right"), JudgeResult(None, error="RateLimitError: x"), JudgeResult(1.0, "wrong")]
    )
    samples = get_task("generation").evaluate(FakeVLM(default=" a painter "), qs, TaskContext(judge=judge))
    # the judge sees the extracted answer and the profile ID (the official rubric's "Image ID")
    assert judge.calls == [[(q.text, "a painter", "She is a painter", q.profile_id) for q in qs]]
    assert [s.scores["factuality"] for s in samples] == [10.0, None, 1.0]
    assert [s.extra["judge"] for s in samples] == ["scored", "failed", "scored"]
    agg = get_task("generation").aggregate(samples)
    assert agg["factuality"] == pytest.approx(5.5)  # (10 + 1) / 2: the raw scale, as the papers report
    assert (agg["factuality_scored"], agg["factuality_failed"]) == (2, 1)


def test_generation_without_an_available_judge_scores_everything_else():
    judge = FakeJudge([], available=False)
    samples = get_task("generation").evaluate(FakeVLM(default="x"), [question("generation")], TaskContext(judge=judge))
    assert judge.calls == [] and samples[0].scores["factuality"] is None
    assert samples[0].extra["judge"] == "skipped" and samples[0].scores["rouge1"] == 0.0


# --------------------------------------------------------------------------- cloze


@pytest.mark.parametrize(
    "response,answer,acc,em",
    [
        ("Doctor", "doctor", True, True),
        ("He was a DOCTOR in Paris.", "doctor", True, False),  # ground truth inside a longer answer
        (" doctor. ", "Doctor", True, True),
        ("doc", "doctor", False, False),
        ("", "doctor", False, False),
        ("New-York", "New York", False, True),
        ("anything", "  ", None, None),
    ],
)
def test_cloze_official_substring_and_strict_exact_match(response, answer, acc, em):
    assert contains_answer(response, answer) is acc
    assert exact_match(response, answer) is em


def test_cloze_task_requests_and_aggregate():
    qs = [
        question("cloze", "image_text", pid="p1", answer="Paris"),
        question("cloze", "text_only", pid="p2", answer="Paris"),
    ]
    vlm = FakeVLM({"p1": "She was born in paris", "p2": "Paris"})
    samples = get_task("cloze").evaluate(vlm, qs, TaskContext())
    reqs = vlm.generated[0][0]
    assert [r.text for r in reqs] == [user_text("cloze", q.mode, q.text) for q in qs]
    assert "[Blank]" in reqs[0].text and "__" not in reqs[0].text
    assert [r.image is not None for r in reqs] == [True, False]
    assert get_task("cloze").aggregate(samples) == {"accuracy": 1.0, "exact_match": 0.5, "n": 2}
    assert get_task("cloze").aggregate([]) == {"accuracy": None, "exact_match": None, "n": 0}
