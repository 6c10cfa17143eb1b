"""Relearning recovery, fold splits and the collapse detector against hand-computed values."""

from __future__ import annotations

import pytest

from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.robustness import (
    COLLAPSE_SHARE,
    collapse_by_kind,
    collapse_summary,
    degenerate,
    first_collapse,
    fold_split,
    recovery,
    repeated_ngram_share,
    select_best,
    tradeoff,
)


@pytest.mark.parametrize(
    "original, unlearned, relearned, expected",
    [
        (1.0, 0.2, 0.6, 0.5),  # half of what unlearning took came back
        (1.0, 0.2, 0.2, 0.0),  # nothing came back
        (1.0, 0.2, 1.0, 1.0),  # all of it
        (0.8, 0.2, 1.1, 1.5),  # beyond the original
        (1.0, 0.2, 0.1, -0.125),  # the attack made it forget more
        (0.2, 0.8, 0.5, 0.5),  # a metric that rose under unlearning (a loss): same share
    ],
)
def test_recovery_is_the_share_of_the_removed_knowledge_that_came_back(original, unlearned, relearned, expected):
    assert recovery(original, unlearned, relearned) == pytest.approx(expected)


def test_recovery_is_undefined_when_unlearning_removed_nothing_or_a_figure_is_missing():
    assert recovery(0.7, 0.7, 0.9) is None
    # MANU's image+text generation on the demo: ROUGE-L 1.000 -> 0.992; one changed answer would
    # read as a recovery of -12, so a removal under MIN_REMOVED (0.1) is not measured against.
    assert recovery(1.0, 0.992, 0.894) is None
    assert recovery(1.0, 0.95, 1.0) is None
    assert recovery(1.0, 0.9, 0.95) == pytest.approx(0.5)  # exactly MIN_REMOVED: defined
    assert recovery(1.0, 0.95, 1.0, min_removed=0.05) == pytest.approx(1.0)
    assert recovery(None, 0.2, 0.5) is None
    assert recovery(1.0, None, 0.5) is None
    assert recovery(1.0, 0.2, None) is None


def test_folds_are_disjoint_cover_every_profile_and_are_balanced():
    ids = [str(i) for i in range(11)]
    folds = fold_split(ids, 3, seed=0)
    assert len(folds) == 3
    flat = [p for f in folds for p in f]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1


def test_folds_are_seeded_and_do_not_depend_on_input_order():
    ids = [f"p{i}" for i in range(10)]
    assert fold_split(ids, 2, seed=1) == fold_split(list(reversed(ids)), 2, seed=1)
    assert fold_split(ids, 2, seed=1) != fold_split(ids, 2, seed=2)


def test_folds_refuse_too_few_folds_or_profiles():
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_split(["a", "b"], 1, seed=0)
    with pytest.raises(ValueError, match="3 forget profiles cannot be split into 4"):
        fold_split(["a", "b", "c"], 4, seed=0)


def test_repeated_trigram_share_by_hand():
    # trigrams: (a b c) (b c a) (c a b) (a b c): 4, of which 3 distinct -> 1 - 3/4
    assert repeated_ngram_share("a b c a b c") == pytest.approx(0.25)
    # (x x x) three times -> 1 - 1/3
    assert repeated_ngram_share("x x x x x") == pytest.approx(2 / 3)
    assert repeated_ngram_share("this person was born in the year 1985.") == 0.0
    assert repeated_ngram_share("too short") == 0.0


@pytest.mark.parametrize(
    "response, mc, letter, expected",
    [
        ("this person was born in the city of london.", False, None, None),  # fluent
        ("", False, None, "empty"),
        ("   \n", True, None, "empty"),
        ("in in in in in in in in in in", False, None, "repetitive"),
        ("teacher teacher teacher teacher teacher", False, None, "repetitive"),
        ("the answer is unknown to me", True, None, "letterless"),  # multiple choice without A-D
        ("B. London", True, "B", None),
        ("B B B B B B B B", True, "B", "repetitive"),
    ],
)
def test_collapse_detector_on_hand_made_answers(response, mc, letter, expected):
    assert degenerate(response, needs_letter=mc, letter=letter) == expected


def test_collapse_summary_counts_reasons_and_flags_a_majority():
    s = collapse_summary([None, "empty", "repetitive", "repetitive"])
    assert s["answers"] == 4
    assert s["empty_share"] == 0.25 and s["repetitive_share"] == 0.5 and s["letterless_share"] == 0.0
    assert s["degenerate_share"] == 0.75 and s["collapsed"] is True
    healthy = collapse_summary([None, None, "letterless"])
    assert healthy["degenerate_share"] == pytest.approx(1 / 3)
    assert healthy["degenerate_share"] < COLLAPSE_SHARE and healthy["collapsed"] is False
    assert collapse_summary([])["degenerate_share"] is None and collapse_summary([])["collapsed"] is False


def test_a_checkpoint_collapses_when_one_answer_kind_mostly_degenerates():
    looping = collapse_by_kind({"generation": ["repetitive", "repetitive", None], "classification": [None, None, None]})
    assert looping["collapsed"] is True and looping["degenerate_share"] == pytest.approx(2 / 3)
    assert looping["classification"]["collapsed"] is False
    healthy = collapse_by_kind({"generation": [None, "repetitive", None], "classification": [None, "letterless", None]})
    assert healthy["collapsed"] is False and healthy["degenerate_share"] == pytest.approx(1 / 3)


def test_first_collapse_is_the_earliest_collapsed_step():
    assert first_collapse([(24, True), (8, False), (16, True)]) == 16
    assert first_collapse([(8, False), (16, False)]) is None


def _metrics(forget: dict, retain: dict) -> dict:
    """Sweep metrics {set: {task: {mode: {metric: v}}}} from {(task, mode): v} per set."""
    out: dict = {}
    for s, cells in (("forget", forget), ("retain", retain)):
        for (t, m), v in cells.items():
            out.setdefault(s, {}).setdefault(t, {})[m] = {"accuracy": v}
    return out


def test_tradeoff_is_the_worst_modes_mean_retain_minus_forget():
    m = _metrics(
        forget={
            ("cloze", "image_text"): 0.2,
            ("cloze", "text_only"): 0.8,
            ("generation", "image_text"): 0.4,
            ("generation", "text_only"): 0.6,
        },
        retain={
            ("cloze", "image_text"): 0.9,
            ("cloze", "text_only"): 1.0,
            ("generation", "image_text"): 0.7,
            ("generation", "text_only"): 0.8,
        },
    )
    # image+text: ((0.9-0.2) + (0.7-0.4)) / 2 = 0.5; text-only: ((1.0-0.8) + (0.8-0.6)) / 2 = 0.2
    assert tradeoff(m, MODES) == pytest.approx(0.2)
    assert tradeoff(m, ["image_text"]) == pytest.approx(0.5)
    # the first metric that was scored counts (letter accuracy None: a log-likelihood scorer's)
    m["forget"]["cloze"]["text_only"] = {"accuracy": None, "accuracy_loglik_frame": 0.5}
    m["retain"]["cloze"]["text_only"] = {"accuracy": None, "accuracy_loglik_frame": 0.9}
    assert tradeoff(m, ["text_only"]) == pytest.approx(((0.9 - 0.5) + 0.2) / 2)
    assert tradeoff(_metrics({("cloze", "text_only"): 0.1}, {("cloze", "text_only"): 0.9}), MODES) is None


def _point(step: int, gap: float, collapsed: tuple[str, ...] = ()) -> dict:
    cells = {("cloze", m): 1.0 - gap for m in MODES}
    return {
        "step": step,
        "metrics": _metrics(forget=cells, retain={k: 1.0 for k in cells}),
        "collapse": {m: {"collapsed": m in collapsed} for m in MODES},
    }


def test_select_best_takes_the_best_trade_off_that_did_not_collapse_earliest_on_a_tie():
    points = [_point(4, 0.25), _point(8, 0.75), _point(12, 0.9, collapsed=("text_only",)), _point(16, 0.75)]
    step, scores = select_best(points, MODES)
    assert step == 8  # 12 is better but collapsed in one mode; 16 ties with 8 and comes later
    assert scores == pytest.approx({4: 0.25, 8: 0.75, 12: 0.9, 16: 0.75})
    assert select_best([_point(4, 0.5, collapsed=MODES)], MODES) == (None, {4: pytest.approx(0.5)})


def test_select_best_ties_trade_offs_equal_on_paper_but_not_in_float_bits():
    def point(step, forget, retain):
        cells = {("cloze", m): forget for m in MODES}
        return {
            "step": step,
            "metrics": _metrics(forget=cells, retain={k: retain for k in cells}),
            "collapse": {m: {"collapsed": False} for m in MODES},
        }

    points = [point(8, 0.25, 0.7), point(16, 0.45, 0.9)]  # 0.7 - 0.25 = 0.44999999999999996, 0.9 - 0.45 = 0.45
    assert select_best(points, MODES)[0] == 8


def test_a_snapshot_restores_the_trainable_weights_only():
    import torch

    from mmunlearn.harness.core.checkpoints import restore, snapshot

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[1].weight.requires_grad_(False)
    snap = snapshot(model)
    assert set(snap) == {"0.weight", "0.bias", "1.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    restore(model, snap)
    for n, p in model.named_parameters():
        expected = before[n] + (1.0 if n == "1.weight" else 0.0)
        assert torch.equal(p, expected), n
    with pytest.raises(RuntimeError, match="no parameter"):
        restore(torch.nn.Linear(3, 3), {"0.weight": snap["0.weight"]})


def test_check_reads_collapse_and_recovery_in_the_right_direction():
    from mmunlearn.harness.core.contracts import knowledge_falls

    # retain: more degenerate answers is less kept knowledge (a regression); forget: more
    # recovery is more knowledge (a regression there too)
    assert knowledge_falls("collapse", "final_degenerate_share") is True
    assert knowledge_falls("collapse", "first_collapse_step") is False
    assert knowledge_falls("relearn_cloze", "recovery_from_text_only") is False


def test_leaderboard_tells_a_collapse_that_never_came_from_a_figure_not_available():
    from mmunlearn.harness.app.leaderboard import Run, stage_text
    from mmunlearn.stages.sweep import NO_STEPS, SweepStage

    step = next(c for c in SweepStage.columns if c.metric == "first_collapse_step")

    def run(cell):
        return Run("m", "ga", {}, 0, "p", {"retain": {"collapse": {"text_only": cell}}}, {}, {})

    assert stage_text(run({"first_collapse_step": 40, "collapsed": 1.0}), step, "text_only") == "40"
    assert stage_text(run({"first_collapse_step": None, "collapsed": 0.0}), step, "text_only") == "never"
    assert stage_text(run({"first_collapse_step": None, "note": NO_STEPS}), step, "text_only") == "–"
    assert stage_text(run({"first_collapse_step": None}), step, "image_text") == "–"  # not swept in this mode


def test_relearn_cells_by_hand():
    """Four cloze questions (profiles a, b held out in turn): original knew all four, the
    unlearned model none; the text attack brings back one held-out answer of four and three of
    the four it trained on, the control none."""
    from mmunlearn.harness.core.contracts import SampleResult
    from mmunlearn.stages.relearn import RelearnStage

    def answers(right: set[int], mode: str) -> dict:
        return {
            f"q{i}/{mode}": SampleResult(
                f"q{i}/{mode}",
                "forget",
                "cloze",
                mode,
                "ab"[i % 2],
                "h",
                "x",
                {"accuracy": float(i in right), "exact_match": 0.0},
            )
            for i in range(4)
        }

    unlearned = {("cloze", m): answers(set(), m) for m in MODES}
    original = {("cloze", m): answers({0, 1, 2, 3}, m) for m in MODES}
    attacks = {
        f"{kind}-{r}": {
            "held_out": {
                ("cloze", m): answers({0} if kind == "attack" and r == "text_only" else set(), m) for m in MODES
            },
            "trained": {
                ("cloze", m): list(answers({0, 1, 2} if kind == "attack" else set(), m).values()) for m in MODES
            },
        }
        for kind in ("attack", "control")
        for r in MODES
    }
    cell = RelearnStage._metrics(["cloze"], unlearned, original, attacks, None)["forget"]["relearn_cloze"]["image_text"]
    assert cell["original"] == 1.0 and cell["unlearned"] == 0.0 and "note" not in cell
    assert cell["recovery_from_text_only"] == 0.25 and cell["recovery_from_image_text"] == 0.0
    assert cell["trained_recovery_from_text_only"] == 0.75
    assert cell["control_recovery_from_text_only"] == 0.0
    # nothing removed: every recovery None, with the reason
    same = RelearnStage._metrics(["cloze"], original, original, attacks, None)["forget"]["relearn_cloze"]["text_only"]
    assert same["recovery_from_text_only"] is None and same["trained_recovery_from_text_only"] is None
    assert same["note"].startswith("not defined: unlearning removed less than 0.1")
