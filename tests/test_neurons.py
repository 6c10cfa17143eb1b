"""mmunlearn.harness.core.neurons: neuron map per architecture, streamed statistics, exact pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.model import Request, load_vlm, wrap_vlm
from mmunlearn.harness.core.neurons import STAT_KEYS, ActivationRecorder, neuron_map, prune_units
from tests.tiny_vlms import ARCHES, build_tiny_vlm, tiny_images

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vlms():
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = wrap_vlm(*build_tiny_vlm(arch))
        return cache[arch]

    return get


def samples():
    """Mixed modes, different prompt lengths, and images of different aspect ratios so that
    batching pads crops (LLaVA-NeXT), patches (Idefics2) and packs different patch counts (Qwen2-VL)."""
    wide, tall = tiny_images(2, size=64, seed=3)
    imgs = [tiny_images(1, seed=2)[0], wide.crop((0, 0, 64, 32)), tall.crop((0, 0, 32, 64))]
    reqs = [
        Request("what is the job of this person ?", imgs[0]),
        Request("who is alice ?"),
        Request("what city is bob born in ? please answer the question in one sentence", imgs[1]),
        Request("name"),
        Request("red", imgs[2]),
    ]
    answers = ["doctor", "a painter from paris", "rome", "the big city of london", "blue"]
    return reqs, answers


def vision_depth(config):
    v = config.vision_config
    return getattr(v, "num_hidden_layers", None) or v.depth


# ---- map -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_neuron_map_covers_both_towers(vlms, arch):
    model = vlms(arch).model
    nmap = neuron_map(model)
    lang = [b for b in nmap.blocks if b.tower == "language"]
    vis = [b for b in nmap.blocks if b.tower == "vision"]
    assert [b.layer for b in lang] == list(range(model.config.text_config.num_hidden_layers))
    assert [b.layer for b in vis] == list(range(vision_depth(model.config)))
    assert all(
        b.units == model.config.text_config.intermediate_size
        and b.down == "down_proj"
        and b.ups == ("gate_proj", "up_proj")
        for b in lang
    )
    for b in nmap.blocks:
        mlp = model.get_submodule(b.path)
        assert mlp._modules[b.down].in_features == b.units
        assert all(mlp._modules[u].out_features == b.units for u in b.ups)
    assert nmap.total == sum(b.units for b in nmap.blocks) == len(nmap.tower) == len(nmap.unit)
    for i, b in enumerate(nmap.blocks):
        sl = nmap.block_slice(i)
        assert (nmap.tower[sl] == b.tower).all() and (nmap.layer[sl] == b.layer).all()
        assert nmap.unit[sl].tolist() == list(range(b.units))


def test_vision_mlp_kinds_per_architecture(vlms):
    assert {b.down for b in neuron_map(vlms("qwen2_vl").model).blocks if b.tower == "vision"} == {"fc2"}
    assert {b.ups for b in neuron_map(vlms("qwen2_5_vl").model).blocks if b.tower == "vision"} == {
        ("gate_proj", "up_proj")
    }
    assert {b.ups for b in neuron_map(vlms("llava").model).blocks if b.tower == "vision"} == {("fc1",)}


def test_connector_mlps_are_not_neurons(vlms):
    """Idefics2's connector has gated MLPs (modality projection, perceiver) outside both towers."""
    model = vlms("idefics2").model
    assert any("connector" in n and hasattr(m, "down_proj") for n, m in model.named_modules())
    assert not any("connector" in b.path for b in neuron_map(model).blocks)


# ---- recorder ------------------------------------------------------------------------------


def record(vlm, nmap, batches, tau=0.05):
    with ActivationRecorder(vlm.model, nmap, tau) as rec:
        rec.set_bucket("x")
        for reqs, answers in batches:
            with torch.no_grad():
                vlm.model(**vlm.encode(reqs, answers))
    return rec.stats["x"]


@pytest.mark.parametrize("arch", ARCHES)
def test_batched_stats_equal_one_sample_at_a_time(vlms, arch):
    vlm = vlms(arch)
    nmap = neuron_map(vlm.model)
    reqs, answers = samples()
    batched = record(vlm, nmap, [(reqs, answers)])
    single = record(vlm, nmap, [([r], [a]) for r, a in zip(reqs, answers)])
    for key in STAT_KEYS:
        np.testing.assert_allclose(batched[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    lang, vis = nmap.tower == "language", nmap.tower == "vision"
    assert (batched["n"][lang] == len(reqs)).all()
    assert (batched["n"][vis] == sum(r.image is not None for r in reqs)).all()  # one per image
    assert batched["sum_abs"].min() >= 0 and (batched["sum_sq"] > 0).all()


def test_language_z_is_mean_over_real_tokens(vlms):
    """Reference: capture the down_proj input of one unpadded sample and average it by hand."""
    vlm = vlms("llava")
    nmap = neuron_map(vlm.model)
    i = next(k for k, b in enumerate(nmap.blocks) if b.tower == "language")
    block = nmap.blocks[i]
    req, ans = Request("who is alice ?"), "doctor"
    seen = []
    down = vlm.model.get_submodule(block.path).down_proj
    h = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().double()))
    with torch.no_grad():
        vlm.model(**vlm.encode([req], [ans]))
    h.remove()
    z = seen[0][0].mean(0).numpy()
    tau = float(np.median(np.abs(z)))
    stats = record(vlm, nmap, [([req], [ans]), ([req, Request("name")], [ans, "x y z"])], tau=tau)
    # second batch pads `req`'s neighbour; the padded pass must add exactly z again (+ the other sample)
    other = record(vlm, nmap, [([Request("name")], ["x y z"])], tau=tau)
    sl = nmap.block_slice(i)
    np.testing.assert_allclose(stats["sum"][sl] - other["sum"][sl], 2 * z, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["sum_sq"][sl] - other["sum_sq"][sl], 2 * z * z, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(stats["n_active"][sl] - other["n_active"][sl], 2 * (np.abs(z) > tau))


def test_buckets_are_separate_and_hooks_are_removed(vlms):
    vlm = vlms("llava")
    nmap = neuron_map(vlm.model)
    reqs, answers = samples()
    with ActivationRecorder(vlm.model, nmap, 0.1) as rec:
        rec.set_bucket("forget_image_text")
        with torch.no_grad():
            vlm.model(**vlm.encode(reqs[:1], answers[:1]))
        rec.set_bucket("forget_text_only")
        with torch.no_grad():
            vlm.model(**vlm.encode(reqs[1:2], answers[1:2]))
    snapshot = {k: {s: v.copy() for s, v in d.items()} for k, d in rec.stats.items()}
    assert set(snapshot) == {"forget_image_text", "forget_text_only"}
    assert (snapshot["forget_text_only"]["n"][nmap.tower == "vision"] == 0).all()
    assert (snapshot["forget_image_text"]["n"] == 1).all()
    with torch.no_grad():
        vlm.model(**vlm.encode(reqs[:2], answers[:2]))
    for k in snapshot:
        for s in STAT_KEYS:
            np.testing.assert_array_equal(rec.stats[k][s], snapshot[k][s])


def test_recorder_misuse_is_a_clear_error(vlms):
    vlm = vlms("llava")
    nmap = neuron_map(vlm.model)
    batch = vlm.encode([Request("who is alice ?")])
    with ActivationRecorder(vlm.model, nmap, 0.1) as rec:
        with pytest.raises(ConfigError, match="set_bucket"), torch.no_grad():
            vlm.model(**batch)
        rec.set_bucket("b")
        rec.set_token_mask(torch.ones(1, 3, dtype=torch.long))
        with pytest.raises(ConfigError, match="token mask"), torch.no_grad():
            vlm.model(input_ids=batch["input_ids"])  # no attention_mask in the call: stale mask used


# ---- pruning -------------------------------------------------------------------------------


def _pick(nmap, rng):
    """Two units in the first language block and one in the last vision block."""
    mask = np.zeros(nmap.total, bool)
    lang = next(i for i, b in enumerate(nmap.blocks) if b.tower == "language")
    vis = max(i for i, b in enumerate(nmap.blocks) if b.tower == "vision")
    for i, k in ((lang, 2), (vis, 1)):
        sl = nmap.block_slice(i)
        mask[sl.start + rng.choice(sl.stop - sl.start, k, replace=False)] = True
    return mask


@pytest.mark.parametrize("arch", ARCHES)
def test_pruning_removes_exactly_the_unit_contribution(arch):
    model, _ = build_tiny_vlm(arch)
    nmap = neuron_map(model)
    mask = _pick(nmap, np.random.default_rng(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probes = {}
    for i, block in enumerate(nmap.blocks):
        idx = np.flatnonzero(mask[nmap.block_slice(i)])
        if idx.size:
            mlp = model.get_submodule(block.path)
            x = torch.randn(2, 5, mlp._modules[block.ups[0]].in_features)
            probes[i] = (idx, x, *_run_mlp(mlp, block, x), mlp._modules[block.down].weight.detach().clone())

    assert prune_units(model, nmap, mask) == 3

    for i, (idx, x, out0, h0, w_down) in probes.items():
        block = nmap.blocks[i]
        out1, h1 = _run_mlp(model.get_submodule(block.path), block, x)
        assert (h1[..., idx] == 0).all()  # the neuron is silent...
        others = np.setdiff1d(np.arange(block.units), idx)
        torch.testing.assert_close(h1[..., others], h0[..., others])  # ...and only it
        removed = h0[..., idx] @ w_down[:, idx].T  # its contribution to the block output
        torch.testing.assert_close(out1, out0 - removed, rtol=1e-5, atol=1e-5)

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    allowed = set()
    for i, block in enumerate(nmap.blocks):
        if mask[nmap.block_slice(i)].any():
            allowed |= {f"{block.path}.{block.down}.weight"}
            allowed |= {f"{block.path}.{u}.{p}" for u in block.ups for p in ("weight", "bias")}
    assert changed and changed <= allowed
    for k in changed:  # inside allowed tensors, only the pruned rows/columns changed (to zero)
        diff = before[k] != after[k]
        assert (after[k][diff] == 0).all()


def _run_mlp(mlp, block, x):
    seen = []
    h = mlp._modules[block.down].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    with torch.no_grad():
        out = mlp(x)
    h.remove()
    return out, seen[0]


def test_pruned_model_keeps_zeros_after_save_and_reload(tmp_path):
    vlm = wrap_vlm(*build_tiny_vlm("llava"))
    nmap = neuron_map(vlm.model)
    mask = _pick(nmap, np.random.default_rng(1))
    prune_units(vlm.model, nmap, mask)
    vlm.save(tmp_path / "pruned")
    again = load_vlm(tmp_path / "pruned")
    assert again.weights_hash() == vlm.weights_hash()
    for i, block in enumerate(nmap.blocks):
        idx = np.flatnonzero(mask[nmap.block_slice(i)])
        if idx.size:
            mlp = again.model.get_submodule(block.path)
            assert (mlp._modules[block.down].weight[:, idx] == 0).all()
            assert all((mlp._modules[u].weight[idx] == 0).all() for u in block.ups)


def test_prune_mask_must_match_the_map():
    model, _ = build_tiny_vlm("llava")
    nmap = neuron_map(model)
    with pytest.raises(ConfigError, match=f"shape \\({nmap.total},\\)"):
        prune_units(model, nmap, np.zeros(nmap.total - 1, bool))
    with pytest.raises(ConfigError, match="bool"):
        prune_units(model, nmap, np.zeros(nmap.total, int))
    assert prune_units(model, nmap, np.zeros(nmap.total, bool)) == 0
