"""MANU: the importance equations on hand-computed tables, selection per pool, the statistics file,
and the method end to end on a tiny random LLaVA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.contracts import get_method, parse_params
from mmunlearn.harness.core.neurons import STAT_KEYS
from mmunlearn.harness.core.neurons import OutputNeurons, OutputRecorder
from mmunlearn.methods.manu import (
    FUNCTIONS,
    NeuronIndex,
    collect_statistics,
    importance,
    importance_abs,
    importance_freq,
    importance_rms,
    importance_var,
    load_statistics,
    official_scores,
    paper_scores,
    score,
    select_top,
    selection_from_statistics,
)

EPS = 1e-8


def table(**cols):
    return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


# Three neurons. Neuron 2 is a vision neuron: it has no text-only samples (n = 0).
MULTI = table(n=[4, 4, 4], sum_abs=[4, 2, 2], sum=[2, -2, 2], sum_sq=[8, 2, 1.5], n_active=[3, 1, 2])
TEXT = table(n=[2, 2, 0], sum_abs=[1, 2, 0], sum=[1, 0, 0], sum_sq=[1, 4, 0], n_active=[1, 2, 0])

# By hand:            neuron 0                      neuron 1                      neuron 2 (vision)
# Zbar_m, Zbar_t      4/4=1, 1/2=0.5                2/4=0.5, 2/2=1                2/4=0.5, 0
# N_m, N_t            3/4, 1/2                      1/4, 2/2                      2/4, 0
# Var_m, Var_t        8/4-(2/4)^2=1.75, 1/2-1/4     2/4-(1/2)^2=0.25, 4/2-0=2     1.5/4-(2/4)^2=0.125, 0
# Q_m, Q_t            2, 0.5                        0.5, 2                        0.375, 0
EXPECTED = {
    "abs": [0.5 / (1.5 + EPS), 0.5 / (1.5 + EPS), 0.5 / (0.5 + EPS)],
    "freq": [0.25 / (1.25 + EPS), 0.75 / (1.25 + EPS), 0.5 / (0.5 + EPS)],
    "var": [math.sqrt(1.75 + 0.25), math.sqrt(0.25 + 2), math.sqrt(0.125)],
    "rms": [math.sqrt(1.5 / (2.5 + EPS)), math.sqrt(1.5 / (2.5 + EPS)), math.sqrt(0.375 / (0.375 + EPS))],
}
FUNCS = {"abs": importance_abs, "freq": importance_freq, "var": importance_var, "rms": importance_rms}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_importance_functions_match_hand_computed_values(name):
    np.testing.assert_allclose(FUNCS[name](MULTI, TEXT, EPS), EXPECTED[name], rtol=1e-9)


def test_vision_neuron_without_text_samples_scores_one_on_abs_freq_rms():
    for name in ("abs", "freq", "rms"):
        assert FUNCS[name](MULTI, TEXT, EPS)[2] == pytest.approx(1.0, abs=1e-6)


def test_inactive_neuron_in_both_modes_gives_zero_not_nan():
    zero = table(n=[3], sum_abs=[0], sum=[0], sum_sq=[0], n_active=[0])
    none = table(n=[0], sum_abs=[0], sum=[0], sum_sq=[0], n_active=[0])
    assert importance(zero, none, FUNCTIONS, EPS).tolist() == [0.0]


def test_importance_is_the_sum_of_enabled_functions_and_each_can_be_switched_off():
    total = sum(np.asarray(EXPECTED[k]) for k in FUNCTIONS)
    np.testing.assert_allclose(importance(MULTI, TEXT, FUNCTIONS, EPS), total, rtol=1e-9)
    for off in FUNCTIONS:
        kept = tuple(f for f in FUNCTIONS if f != off)
        np.testing.assert_allclose(importance(MULTI, TEXT, kept, EPS), total - np.asarray(EXPECTED[off]), rtol=1e-9)
    np.testing.assert_allclose(importance(MULTI, TEXT, ("var",), EPS), EXPECTED["var"], rtol=1e-9)


def test_score_is_forget_importance_over_retain_importance():
    np.testing.assert_allclose(score(np.array([2.0, 0.0, 3.0]), np.array([1.0, 1.0, 0.0]), EPS), [2.0, 0.0, 3.0 / EPS])


def test_paper_scores_combine_the_four_buckets():
    stats = {"forget_image_text": MULTI, "forget_text_only": TEXT, "retain_image_text": MULTI, "retain_text_only": TEXT}
    # Same data for forget and retain: every score is I / (I + eps), i.e. 1.
    np.testing.assert_allclose(paper_scores(stats, FUNCTIONS, EPS), 1.0, rtol=1e-6)


def test_paper_scores_put_the_forget_buckets_over_the_retain_buckets():
    # Retain neurons never active: retain importance 0, so S_n = I(D_f, n) / eps, from the hand
    # values; the forget and retain buckets swapped would give 0 everywhere.
    silent = table(n=[4, 4, 4], sum_abs=[0, 0, 0], sum=[0, 0, 0], sum_sq=[0, 0, 0], n_active=[0, 0, 0])
    stats = {
        "forget_image_text": MULTI,
        "forget_text_only": TEXT,
        "retain_image_text": silent,
        "retain_text_only": silent,
    }
    total = sum(np.asarray(EXPECTED[k]) for k in FUNCTIONS)
    np.testing.assert_allclose(paper_scores(stats, FUNCTIONS, EPS), total / EPS, rtol=1e-6)


def test_official_scores_hand_computed():
    # one language neuron (scored on text_only passes), one vision neuron (image_text passes)
    f_text = table(n=[4, 0], sum_abs=[4, 0], sum=[0, 0], sum_sq=[8, 0], n_active=[2, 0])
    r_text = table(n=[4, 0], sum_abs=[2, 0], sum=[0, 0], sum_sq=[2, 0], n_active=[2, 0])
    f_img = table(n=[9, 2], sum_abs=[9, 1], sum=[9, 1], sum_sq=[9, 0.5], n_active=[9, 0])
    r_img = table(n=[9, 2], sum_abs=[9, 2], sum=[9, 2], sum_sq=[9, 2], n_active=[9, 2])
    stats = {
        "forget_text_only": f_text,
        "retain_text_only": r_text,
        "forget_image_text": f_img,
        "retain_image_text": r_img,
    }
    e = 1e-5
    # language: abs 1 vs 0.5; std sqrt(2) vs sqrt(0.5); rms sqrt(2) vs sqrt(0.5); freq weight 0
    lang = 2 * (1 / (0.5 + e) - 1) + 2 * (math.sqrt(2) / (math.sqrt(0.5) + e) - 1) * 2
    # vision: abs 0.5 vs 1; std 0 vs 0; rms 0.5 vs 1
    vis = 2 * (0.5 / (1 + e) - 1) + 2 * (0 / (0 + e) - 1) + 2 * (0.5 / (1 + e) - 1)
    got = official_scores(stats, np.array(["language", "vision"]), FUNCTIONS, e)
    np.testing.assert_allclose(got, [lang, vis], rtol=1e-9)


INDEX = NeuronIndex(
    tower=np.array(["language"] * 6 + ["vision"] * 4),
    layer=np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1]),
    unit=np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 1]),
)
SCORES = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5])


def test_select_top_pools():
    assert np.flatnonzero(select_top(SCORES, INDEX, 0.2, "global")).tolist() == [0, 1]
    # tower: round(0.2*6)=1 language, round(0.2*4)=1 vision
    assert np.flatnonzero(select_top(SCORES, INDEX, 0.2, "tower")).tolist() == [0, 6]
    # layer: blocks of 3,3,2,2 -> round(0.6)=1, 1, round(0.4)=0, 0
    assert np.flatnonzero(select_top(SCORES, INDEX, 0.2, "layer")).tolist() == [0, 3]
    assert np.flatnonzero(select_top(SCORES, INDEX, 0.5, "layer")).tolist() == [0, 1, 3, 4, 6, 8]


def test_select_top_alpha_zero_and_one():
    for pool in ("global", "tower", "layer"):
        assert not select_top(SCORES, INDEX, 0.0, pool).any()
        assert select_top(SCORES, INDEX, 1.0, pool).all()


def test_select_top_breaks_ties_by_position():
    assert np.flatnonzero(select_top(np.zeros(10), INDEX, 0.2, "global")).tolist() == [0, 1]


# ----------------------------------------------------------------------------- on a tiny model


@pytest.fixture(scope="module")
def data():
    from tests.tiny_vlms import tiny_unlearn_data

    return tiny_unlearn_data(["alice", "bob", "carol"], ["dave", "alice", "bob"], seed=3, text_answer_shift=1)


@pytest.fixture
def vlm():
    from mmunlearn.harness.core.model import wrap_vlm
    from tests.tiny_vlms import build_tiny_vlm

    return wrap_vlm(*build_tiny_vlm("llava", seed=0))


def run_manu(vlm, data, **params):
    cls = get_method("manu")
    result = cls().apply(vlm, data, parse_params(cls, params), seed=0)
    return result.vlm, result.report


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_batched_statistics_equal_one_sample_at_a_time(vlm, data, variant):
    from mmunlearn.harness.core.neurons import ActivationRecorder, neuron_map

    nmap = neuron_map(vlm.model)
    index = OutputNeurons(vlm.model, nmap) if variant == "official" else nmap
    recorder = OutputRecorder if variant == "official" else ActivationRecorder
    out = []
    for bs in (4, 1):
        with recorder(vlm.model, index, 0.1) as rec:
            out.append(collect_statistics(vlm, data, rec, bs))
    for bucket in out[0]:
        for stat in STAT_KEYS:
            np.testing.assert_allclose(
                out[0][bucket][stat], out[1][bucket][stat], rtol=1e-5, atol=1e-6, err_msg=f"{bucket} {stat}"
            )
    if variant == "official":  # per-token counts
        return
    # language neurons saw 3 samples of each bucket; vision neurons none on text-only passes
    lang = nmap.tower == "language"
    assert (out[0]["forget_text_only"]["n"][lang] == 3).all()
    assert (out[0]["forget_text_only"]["n"][~lang] == 0).all()
    assert (out[0]["forget_image_text"]["n"][~lang] == 3).all()


@pytest.mark.parametrize("pool", ["global", "tower", "layer"])
def test_stats_file_round_trips_and_reproduces_the_pruned_mask(vlm, data, tmp_path, pool):
    path = tmp_path / "stats.npz"
    vlm, report = run_manu(vlm, data, alpha="0.1", pool=pool, save_stats=str(path))
    assert report["stats_file"] == str(path)
    with np.load(path) as z:
        keys = set(z.files)
    for ds in ("forget", "retain"):
        for mode in ("image_text", "text_only"):
            assert {f"{ds}_{mode}_{s}" for s in STAT_KEYS} <= keys
    assert {"tower", "layer", "unit", "pruned", "tau", "eps", "alpha"} <= keys
    saved = load_statistics(path)
    assert (saved["tau"], saved["eps"], saved["alpha"]) == (0.1, 1e-8, 0.1)
    np.testing.assert_array_equal(selection_from_statistics(path), saved["pruned"])
    # pruned = the top 10% of the recomputed scores within each pool
    scores = paper_scores(saved["stats"], FUNCTIONS, saved["eps"])
    idx = saved["index"]
    groups = {
        "global": [np.ones(len(scores), bool)],
        "tower": [idx.tower == t for t in ("language", "vision")],
        "layer": [(idx.tower == t) & (idx.layer == l) for t, l in set(zip(idx.tower, idx.layer))],
    }[pool]
    for g in groups:
        k = int(math.floor(0.1 * g.sum() + 0.5))
        chosen = np.flatnonzero(g & saved["pruned"])
        assert len(chosen) == k
        if k:
            assert scores[chosen].min() >= np.sort(scores[g])[::-1][k - 1]
    assert report["changed"]["neurons_pruned"] == int(saved["pruned"].sum()) > 0


def test_pruned_neurons_are_zeroed_and_nothing_else_changes(vlm, data, tmp_path):
    from mmunlearn.harness.core.neurons import neuron_map

    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    vlm, _ = run_manu(vlm, data, alpha="0.05", save_stats=str(tmp_path / "s.npz"))
    pruned = load_statistics(tmp_path / "s.npz")["pruned"]
    nmap = neuron_map(vlm.model)
    after = vlm.model.state_dict()
    for i, block in enumerate(nmap.blocks):
        units = np.flatnonzero(pruned[nmap.block_slice(i)])
        down = after[f"{block.path}.{block.down}.weight"]
        assert (down[:, units] == 0).all()
        keep = np.setdiff1d(np.arange(block.units), units)
        assert torch.equal(down[:, keep], before[f"{block.path}.{block.down}.weight"][:, keep])
    touched = {k for k in after if not torch.equal(after[k], before[k])}
    assert touched and all(".mlp." in k for k in touched)


def test_alpha_zero_prunes_nothing(vlm, data):
    h = vlm.weights_hash()
    vlm, report = run_manu(vlm, data, alpha="0")
    assert report["changed"]["neurons_pruned"] == 0
    assert vlm.weights_hash() == h


def test_official_variant_prunes_output_rows_top_k_per_tower(vlm, data, tmp_path):
    vlm, report = run_manu(vlm, data, variant="official", alpha="0.1", save_stats=str(tmp_path / "o.npz"))
    saved = load_statistics(tmp_path / "o.npz")
    assert saved["variant"] == "official" and saved["eps"] == 1e-5
    np.testing.assert_array_equal(selection_from_statistics(tmp_path / "o.npz"), saved["pruned"])
    with np.load(tmp_path / "o.npz") as z:
        modules = z["module"]
    for t in ("language", "vision"):
        in_tower = saved["index"].tower == t
        assert saved["pruned"][in_tower].sum() == int(math.floor(0.1 * in_tower.sum() + 0.5))
    # every module of every layer is eligible (the authors' last-three-layers bug is not copied)
    assert {m.split(".mlp.")[0] for m in modules[saved["pruned"]]} >= {
        m.split(".mlp.")[0] for m in modules if "language_model" in m
    }
    sd = vlm.model.state_dict()
    for m, u in zip(modules[saved["pruned"]], saved["index"].unit[saved["pruned"]]):
        assert (sd[f"{m}.weight"][u] == 0).all()


def test_manu_is_deterministic(data):
    from mmunlearn.harness.core.model import wrap_vlm
    from tests.tiny_vlms import build_tiny_vlm

    hashes = {
        run_manu(wrap_vlm(*build_tiny_vlm("llava", seed=0)), data, alpha="0.05")[0].weights_hash() for _ in range(2)
    }
    assert len(hashes) == 1


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("alpha", "1.5", "between 0 and 1"),
        ("alpha", "-0.1", "between 0 and 1"),
        ("alpha", "two", "a number"),
        ("pool", "neuron", "one of global, tower, layer"),
        ("functions", "abs,size", "one of abs, freq, var, rms"),
        ("functions", "abs,abs", "without repeats"),
        ("variant", "authors", "one of paper, official"),
        ("tau", "-1", ">= 0"),
        ("batch_size", "0", ">= 1"),
    ],
)
def test_bad_parameters_name_method_key_value_and_allowed(key, value, needle):
    with pytest.raises(ConfigError) as err:
        parse_params(get_method("manu"), {key: value})
    msg = str(err.value)
    assert "'manu'" in msg and key in msg and needle in msg
    assert value.split(",")[-1] in msg


def test_official_variant_needs_a_weighted_function():
    with pytest.raises(ConfigError, match="freq has weight 0"):
        parse_params(get_method("manu"), {"variant": "official", "functions": "freq"})


def test_params_parse_to_typed_values():
    p = parse_params(
        get_method("manu"),
        {"alpha": "0.05", "functions": "abs, var", "save_stats": "none", "eps": "1e-6", "pool": "layer"},
    )
    assert (p.alpha, p.functions, p.save_stats, p.eps, p.pool) == (0.05, ("abs", "var"), None, 1e-6, "layer")
