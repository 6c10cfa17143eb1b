"""MLP neurons of a vision-language model: where they are, their streamed activation
statistics, and exact pruning.

A neuron is one intermediate unit of an MLP block, i.e. one entry of the INPUT vector of the
block's down projection (`down_proj` of gated Llama/Mistral/Qwen MLPs and Qwen2.5-VL's vision
MLP, `fc2` of CLIP/SigLIP/Idefics/Qwen2-VL vision MLPs). Blocks are found structurally (a
module with `down_proj` + `gate_proj`/`up_proj`, or `fc1` + `fc2`), and their tower is decided
by whether they live under the model's vision-tower or language-model submodule (found through
the model's attributes). Projectors/connectors between the towers are not counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.hooks import RemovableHandle

from mmunlearn.harness.core.errors import ConfigError

VISION_ATTRS = ("vision_tower", "visual", "vision_model")
LANGUAGE_ATTRS = ("language_model", "text_model")
STAT_KEYS = ("n", "sum_abs", "sum", "sum_sq", "n_active")


@dataclass(frozen=True)
class MLPBlock:
    tower: str  # "language" | "vision"
    layer: int  # index in the tower's ModuleList of layers
    path: str  # module path of the MLP block
    units: int  # intermediate size
    down: str  # projection whose INPUT is the neuron vector
    ups: tuple[str, ...]  # projections producing the neuron vector


class NeuronMap:
    """Flat index over all neurons: entry k belongs to tower[k], layer[k], unit[k]."""

    def __init__(self, blocks: list[MLPBlock]):
        self.blocks = list(blocks)
        self._starts = np.cumsum([0] + [b.units for b in self.blocks])
        self.total = int(self._starts[-1])
        self.tower = np.concatenate([np.full(b.units, b.tower) for b in self.blocks]) if blocks else np.array([], str)
        self.layer = np.concatenate([np.full(b.units, b.layer) for b in self.blocks]) if blocks else np.array([], int)
        self.unit = np.concatenate([np.arange(b.units) for b in self.blocks]) if blocks else np.array([], int)

    def block_slice(self, i: int) -> slice:
        return slice(int(self._starts[i]), int(self._starts[i + 1]))

    def __repr__(self):
        counts = {t: int((self.tower == t).sum()) for t in ("language", "vision")}
        return f"NeuronMap({len(self.blocks)} blocks, {self.total} neurons, {counts})"


def _find_child(model, attrs) -> str | None:
    """Path of the shallowest submodule registered under one of `attrs` (pre-order walk)."""
    for path, module in model.named_modules():
        for attr in attrs:
            if attr in module._modules and module._modules[attr] is not None:
                return f"{path}.{attr}" if path else attr
    return None


def tower_paths(model) -> dict[str, str]:
    """{"vision": path, "language": path} of the model's two towers."""
    out = {}
    for tower, attrs in (("vision", VISION_ATTRS), ("language", LANGUAGE_ATTRS)):
        path = _find_child(model, attrs)
        if path is None:
            raise ConfigError(f"neuron_map: {type(model).__name__} has no {tower} tower submodule (looked for {attrs})")
        out[tower] = path
    return out


def _has_linear(module, name) -> bool:
    sub = module._modules.get(name)
    return sub is not None and hasattr(sub, "weight") and getattr(sub, "weight") is not None


def _mlp_kind(module) -> tuple[str, tuple[str, ...]] | None:
    if _has_linear(module, "down_proj"):
        ups = tuple(n for n in ("gate_proj", "up_proj") if _has_linear(module, n))
        if ups:
            return "down_proj", ups
    if _has_linear(module, "fc1") and _has_linear(module, "fc2"):
        return "fc2", ("fc1",)
    return None


def neuron_map(model) -> NeuronMap:
    """Every MLP block of the language model and the vision tower, in module order."""
    towers = tower_paths(model)
    blocks = []
    for path, module in model.named_modules():
        kind = _mlp_kind(module)
        if kind is None:
            continue
        tower = next((t for t, p in towers.items() if path.startswith(p + ".")), None)
        if tower is None:
            continue  # projector / connector between the towers
        numbers = re.findall(r"\.(\d+)(?=\.|$)", path[len(towers[tower]) :])
        down, ups = kind
        units = module._modules[down].weight.shape[1]
        blocks.append(MLPBlock(tower, int(numbers[-1]) if numbers else 0, path, int(units), down, ups))
    return NeuronMap(blocks)


def prune_units(model, nmap: NeuronMap, mask) -> int:
    """Zero neuron j exactly: column j of `down`, row j (and bias j) of every `up`.
    Returns the number of neurons pruned. The down projection's own bias is left alone (it
    does not belong to any neuron). On a PEFT/LoRA-wrapped model the base weights are zeroed
    but LoRA deltas are not: merge adapters before pruning. The zeros are ordinary weights, so
    `VLM.save` (save_pretrained) keeps them and a reload gives the pruned model back."""
    mask = np.asarray(mask)
    if mask.shape != (nmap.total,) or mask.dtype != bool:
        raise ConfigError(
            f"prune_units: mask must be a bool array of shape ({nmap.total},), got {mask.dtype} {mask.shape}"
        )
    with torch.no_grad():
        for i, block in enumerate(nmap.blocks):
            idx = np.flatnonzero(mask[nmap.block_slice(i)])
            if idx.size == 0:
                continue
            module = model.get_submodule(block.path)
            j = torch.as_tensor(idx, device=module._modules[block.down].weight.device)
            module._modules[block.down].weight[:, j] = 0
            for up in block.ups:
                proj = module._modules[up]
                proj.weight[j, :] = 0
                if getattr(proj, "bias", None) is not None:
                    proj.bias[j] = 0
    return int(mask.sum())


def empty_stats(total: int) -> dict[str, np.ndarray]:
    return {k: np.zeros(total, dtype=np.float64) for k in STAT_KEYS}


class ActivationRecorder:
    """Streams per-neuron statistics of z(d), the activation pooled per sample.

    Language tower: z = mean over the sample's non-padding tokens. The mask is the
    `attention_mask` of the model call when it has one, else the one given to
    `set_token_mask` (same (batch, seq) shape as the sequence reaching the language model).
    Vision tower: one sample per image, z = mean over that image's patches (all crops of a
    multi-crop image, padding crops and Idefics padding patches excluded; Qwen2-VL's packed
    patch sequence is split per image by grid_thw). Language and vision counts `n` differ when
    a batch mixes text-only and image requests: text-only requests give no vision samples.

    stats[bucket] = {"n", "sum_abs", "sum", "sum_sq", "n_active" (|z| > tau)}, float64 arrays
    of length nmap.total. Only the current batch's activations are held. Use on plain forward
    passes (not generate, whose cached decoding steps see one token at a time).
    """

    def __init__(self, model, nmap: NeuronMap, tau: float):
        self.model, self.nmap, self.tau = model, nmap, float(tau)
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self._bucket: str | None = None
        self._user_mask = None
        self._call_mask = None
        self._groups = None  # vision rows per sample, from the call's pixel_values
        self._patch_mask = None  # (rows, patches) bool, Idefics padding patches
        self._packed_sizes = None  # Qwen2-VL: patches per image
        self._handles: list[RemovableHandle] = []
        self._vision_path = tower_paths(model)["vision"]

    # ---- public -----------------------------------------------------------------------------
    def set_bucket(self, key: str):
        self._bucket = key
        self.stats.setdefault(key, empty_stats(self.nmap.total))

    def set_token_mask(self, attention_mask):
        self._user_mask = None if attention_mask is None else attention_mask.detach()

    def __enter__(self):
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_call, with_kwargs=True))
        vision = self.model.get_submodule(self._vision_path)
        self._handles.append(vision.register_forward_pre_hook(self._on_vision_call, with_kwargs=True))
        for i, block in enumerate(self.nmap.blocks):
            down = self.model.get_submodule(block.path)._modules[block.down]
            self._handles.append(down.register_forward_pre_hook(self._make_hook(i, block)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    # ---- call context -----------------------------------------------------------------------
    def _on_model_call(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        self._call_mask = mask.detach() if isinstance(mask, torch.Tensor) else None
        pv = kwargs.get("pixel_values")
        self._groups = None
        if isinstance(pv, torch.Tensor) and pv.dim() == 5:  # (batch, crops, C, H, W), zero crops = padding
            real = (pv != 0).flatten(2).any(-1)
            self._groups = real.sum(1).tolist()
        self._patch_mask = None
        self._packed_sizes = None

    def _on_vision_call(self, module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self._packed_sizes = grid.prod(-1).tolist() if isinstance(grid, torch.Tensor) else None
        pmask = kwargs.get("patch_attention_mask")
        self._patch_mask = pmask.flatten(1).bool() if isinstance(pmask, torch.Tensor) else None

    # ---- pooling ----------------------------------------------------------------------------
    def _language_z(self, x: torch.Tensor, block: MLPBlock) -> torch.Tensor:
        mask = self._call_mask if self._call_mask is not None else self._user_mask
        if mask is None:
            return x.double().mean(1)
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ConfigError(
                f"ActivationRecorder: token mask has shape {tuple(mask.shape)} but {block.path} saw a "
                f"(batch, seq) of {tuple(x.shape[:2])}; pass the attention_mask of this exact batch"
            )
        m = mask.to(x.device, torch.float64).unsqueeze(-1)
        return (x.double() * m).sum(1) / m.sum(1).clamp(min=1)

    def _vision_z(self, x: torch.Tensor, block: MLPBlock) -> torch.Tensor:
        if x.dim() == 2 or (x.dim() == 3 and self._packed_sizes is not None and x.shape[0] == 1):
            seq = x.reshape(-1, x.shape[-1]).double()  # packed patches of all images (Qwen2-VL)
            sizes = self._packed_sizes or [seq.shape[0]]
            if sum(sizes) != seq.shape[0]:
                raise ConfigError(
                    f"ActivationRecorder: {block.path} saw {seq.shape[0]} packed patches, grid_thw says {sum(sizes)}"
                )
            return torch.stack([part.mean(0) for part in seq.split(sizes)])
        xd = x.double()
        if self._patch_mask is not None and tuple(self._patch_mask.shape) == tuple(x.shape[:2]):
            m = self._patch_mask.to(x.device, torch.float64).unsqueeze(-1)
        else:
            m = torch.ones(x.shape[0], x.shape[1], 1, dtype=torch.float64, device=x.device)
        sums, counts = (xd * m).sum(1), m.sum(1)
        groups = self._groups or [1] * x.shape[0]
        groups = [g for g in groups if g > 0]
        if sum(groups) != x.shape[0]:
            raise ConfigError(
                f"ActivationRecorder: {block.path} saw {x.shape[0]} images/crops but the "
                f"call's pixel_values hold {sum(groups)}"
            )
        return torch.stack([s.sum(0) / c.sum(0).clamp(min=1) for s, c in zip(sums.split(groups), counts.split(groups))])

    def _make_hook(self, i: int, block: MLPBlock):
        sl = self.nmap.block_slice(i)

        def hook(module, args):
            if self._bucket is None:
                raise ConfigError("ActivationRecorder: call set_bucket(key) before the forward pass")
            x = args[0].detach()
            z = self._language_z(x, block) if block.tower == "language" else self._vision_z(x, block)
            z = z.cpu().numpy()
            st = self.stats[self._bucket]
            st["n"][sl] += z.shape[0]
            st["sum_abs"][sl] += np.abs(z).sum(0)
            st["sum"][sl] += z.sum(0)
            st["sum_sq"][sl] += (z * z).sum(0)
            st["n_active"][sl] += (np.abs(z) > self.tau).sum(0)

        return hook


# ----------------------------------------------------------------------------- the authors' released variant
# Their code scores the output units of every gate/up/down (fc1/fc2) projection, per token,
# and prunes rows of those projections (MANU `variant=official`).


@dataclass(frozen=True)
class OutputSet:
    """One hooked projection in the official variant: its output units are neurons."""

    tower: str
    layer: int
    path: str  # module path of the Linear
    units: int  # out_features


class OutputNeurons:
    """Neurons of the official variant: output units of gate/up/down (fc1/fc2), per module."""

    def __init__(self, model, nmap):
        self.sets = []
        for block in nmap.blocks:
            for name in (*block.ups, block.down):
                path = f"{block.path}.{name}"
                self.sets.append(OutputSet(block.tower, block.layer, path, model.get_submodule(path).out_features))
        self.total = sum(s.units for s in self.sets)
        self.tower = np.concatenate([np.full(s.units, s.tower) for s in self.sets])
        self.layer = np.concatenate([np.full(s.units, s.layer, dtype=np.int64) for s in self.sets])
        self.unit = np.concatenate([np.arange(s.units, dtype=np.int64) for s in self.sets])
        self.offsets = np.cumsum([0] + [s.units for s in self.sets])

    def module_names(self) -> np.ndarray:
        """The module path of every neuron (built on demand: at 7B shape it is ~10^6 strings)."""
        return np.repeat([s.path for s in self.sets], [s.units for s in self.sets])


class OutputRecorder:
    """Per-token statistics of the hooked projections' outputs (the authors' code), streamed.

    Same interface as mmunlearn.harness.core.neurons.ActivationRecorder. Language outputs are counted over
    non-padding tokens only (the token mask); vision outputs over all patches.
    """

    def __init__(self, model, neurons: OutputNeurons, tau: float):
        self.model, self.neurons, self.tau = model, neurons, tau
        self.total = neurons.total
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self._bucket: str | None = None
        self._mask = None
        self._handles: list[RemovableHandle] = []

    def set_bucket(self, key: str) -> None:
        self._bucket = key
        self.stats.setdefault(key, empty_stats(self.total))

    def set_token_mask(self, attention_mask) -> None:
        self._mask = attention_mask

    def _hook(self, i: int):
        s = self.neurons.sets[i]
        lo, hi = int(self.neurons.offsets[i]), int(self.neurons.offsets[i + 1])

        def hook(module, inputs, output):
            a = output.detach()
            if s.tower == "language" and self._mask is not None and a.shape[:-1] == self._mask.shape:
                a = a[self._mask.to(a.device).bool()]  # non-padding tokens only, before any copy
            a = a.reshape(-1, a.shape[-1]).double()  # (tokens or patches, units)
            magnitude = a.abs()
            sums = torch.stack(
                [magnitude.sum(0), a.sum(0), (a * a).sum(0), (magnitude > self.tau).sum(0).double()]
            ).cpu()  # one transfer per module and batch
            acc = self.stats[self._bucket]
            acc["n"][lo:hi] += a.shape[0]
            for key, row in zip(("sum_abs", "sum", "sum_sq", "n_active"), sums.numpy()):
                acc[key][lo:hi] += row

        return hook

    def __enter__(self):
        for i, s in enumerate(self.neurons.sets):
            self._handles.append(self.model.get_submodule(s.path).register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()


def prune_output_rows(model, neurons: OutputNeurons, mask: np.ndarray) -> int:
    """Zero the selected output rows (weight row and bias entry): the official pruning."""
    import torch

    with torch.no_grad():
        for i, s in enumerate(neurons.sets):
            rows = np.flatnonzero(mask[neurons.offsets[i] : neurons.offsets[i + 1]])
            if len(rows):
                lin = model.get_submodule(s.path)
                idx = torch.as_tensor(rows, device=lin.weight.device)
                lin.weight[idx] = 0
                if lin.bias is not None:
                    lin.bias[idx] = 0
    return int(mask.sum())
