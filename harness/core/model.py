"""The model adapter: one `VLM` object hides how each vision-language architecture is prompted,
batched and scored, so tasks and methods never branch on the architecture.

Architecture detection uses `config.model_type` only (never the checkpoint name); the table
`SUPPORTED_ARCHITECTURES` lists what is supported (the `list` command prints it).

Prompt styles (recorded in results as `vlm.prompt_style`; the strings live in mmunlearn.harness.core.prompts):
- "official": the official MLLMU-Bench evaluation strings, `USER: <image>\\n...\\nASSISTANT:`
  with the per-task whitespace of the published code (`mmunlearn.harness.core.prompts.official_prompt`).
- "chat-template": the processor's (or tokenizer's) chat template with a user message holding one
  image entry per image and the same user text, a system message when a system prompt is set,
  and the generation prompt appended.
Defaults: LLaVA-1.5, LLaVA-NeXT with a Llama/Vicuna backbone and Idefics2 use "official" (what
MLLMU-Bench ran, even when the checkpoint ships a chat template); LLaVA-NeXT with another
backbone (e.g. Mistral) and every other architecture use "chat-template". `load_vlm(...,
prompt_style=...)` overrides the default.

SmolVLM v1 checkpoints declare model_type "idefics3" and are covered; SmolVLM2 ("smolvlm") is not
listed: its processor needs num2words and torchvision, so it could not be tested here.
Qwen2-VL/Qwen2.5-VL: when AutoProcessor cannot be built (no torchvision), SplitVLProcessor
assembles the image processor, tokenizer and chat template, and the adapter builds the
`mm_token_type_ids` that M-RoPE needs.

Encoding with answers appends `" " + answer` and the end-of-answer token (the generation
config's first eos id, e.g. `</s>` for LLaVA, `<|im_end|>` for Qwen2-VL) and masks every
prompt and padding position with -100 in `labels`.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mmunlearn.harness.core.errors import ConfigError, ModelLoadError
from mmunlearn.harness.core.prompts import Request, chat_user_text, official_prompt

PROMPT_STYLES = ("official", "chat-template")
CPU_BATCH_SIZE = 8
CUDA_START_BATCH_SIZE = 64


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture (a config.model_type) is loaded and prompted."""

    model_type: str
    model_class: str  # transformers class loaded with from_pretrained
    family: str  # human-readable name for `list`
    prompt_style: str  # default prompt style


SUPPORTED_ARCHITECTURES: dict[str, ArchSpec] = {
    s.model_type: s
    for s in (
        ArchSpec("llava", "LlavaForConditionalGeneration", "LLaVA-1.5", "official"),
        ArchSpec("llava_next", "LlavaNextForConditionalGeneration", "LLaVA-NeXT (1.6)", "official"),
        ArchSpec("idefics2", "Idefics2ForConditionalGeneration", "Idefics2", "official"),
        ArchSpec("idefics3", "Idefics3ForConditionalGeneration", "Idefics3 / SmolVLM (v1)", "chat-template"),
        ArchSpec("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2-VL", "chat-template"),
        ArchSpec("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2.5-VL", "chat-template"),
    )
}


@dataclass
class TokenStats:
    """One scored answer, token by token: log p of each answer token, and (when asked for) the
    mean and standard deviation of log p under the model's next-token distribution there."""

    logps: list[float]
    means: list[float] | None = None
    stds: list[float] | None = None


class SplitVLProcessor:
    """Image processor + tokenizer acting as a processor, for Qwen2-VL-style checkpoints whose
    AutoProcessor cannot be built (Qwen2VLProcessor needs torchvision for its video processor).

    Each image placeholder token in the text is expanded to the number of merged patches of the
    corresponding image, exactly as Qwen2VLProcessor does.
    """

    def __init__(
        self, image_processor, tokenizer, chat_template: str | None = None, image_token: str = "<|image_pad|>"
    ):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token = image_token

    def __call__(self, text, images=None, padding=True, return_tensors="pt", **kwargs):
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        data = {}
        if images:  # one list of images per text (or one image per text): flattened in token order
            images = [im for group in images for im in (group if isinstance(group, (list, tuple)) else [group])]
            img = self.image_processor(images=images, return_tensors="pt")
            data.update(img)
            merge = getattr(self.image_processor, "merge_size", 2) ** 2
            counts = iter((img["image_grid_thw"].prod(-1) // merge).tolist())
            expanded = []
            for t in texts:
                parts = t.split(self.image_token)
                out = parts[0]
                for part in parts[1:]:
                    out += "<|placeholder|>" * next(counts) + part
                expanded.append(out.replace("<|placeholder|>", self.image_token))
            texts = expanded
        data.update(self.tokenizer(texts, padding=padding, return_tensors=return_tensors))
        return BatchFeature(data)

    def apply_chat_template(self, messages, **kwargs):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)

    def save_pretrained(self, path):
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.chat_template:
            Path(path, "chat_template.json").write_text(json.dumps({"chat_template": self.chat_template}))

    @classmethod
    def from_pretrained(cls, source, **kwargs):
        from transformers import AutoImageProcessor, AutoTokenizer

        image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        template = None
        path = Path(source)
        if (path / "chat_template.json").is_file():
            template = json.loads((path / "chat_template.json").read_text())["chat_template"]
        elif (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        return cls(image_processor, tokenizer, template)


def _tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def _resolve_dtype(dtype, device: torch.device):
    """None or "auto" -> float16 on GPU (what the official MLLMU-Bench runs used), float32 on CPU."""
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in names:
        return names[dtype.lower()]
    raise ConfigError(f"dtype {dtype!r} is not one of {sorted(names)}")


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a torch device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


def _looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else (absolute, ./, ~, deeper) is a local path."""
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or source.count("/") > 1
        or os.sep != "/"
        and os.sep in source
    )


def _load_config(source: str, trust_remote_code: bool):
    from transformers import AutoConfig

    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model path {str(path)!r} has no config.json (not a saved model directory)")
    elif _looks_like_path(source):
        raise ModelLoadError(f"model path {source!r} does not exist")
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else source, trust_remote_code=trust_remote_code)
    except Exception as e:  # hub id not found, offline, unreadable config...
        raise ModelLoadError(f"cannot read model config from {source!r}: {e}") from e


def _spec_for(model_type: str, where: str) -> ArchSpec:
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{where}: model_type {model_type!r} is not a supported vision-language architecture; "
            f"supported model_types: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return SUPPORTED_ARCHITECTURES[model_type]


def _load_processor(source: str, trust_remote_code: bool):
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as first:
        try:  # e.g. Qwen2-VL without torchvision: assemble image processor + tokenizer ourselves
            return SplitVLProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        except Exception:
            raise ModelLoadError(f"cannot load the processor of {source!r}: {first}") from first


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickle_weights(path: Path, source: str) -> None:
    """A local checkpoint with pickle weights and no safetensors is refused: unpickling runs code."""
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"model {source!r} has only pickle weights ({', '.join(pickles[:3])}), which can run "
            "arbitrary code when loaded; refused. Convert it to safetensors, or pass "
            "--allow-pickle-weights if you trust its origin"
        )


def load_vlm(
    source,
    device=None,
    dtype=None,
    trust_remote_code: bool = False,
    prompt_style: str | None = None,
    allow_pickle: bool = False,
    device_map: str | None = None,
    base_model: str | None = None,
) -> "VLM":
    """Load a supported VLM (local directory or hub id) with `from_pretrained`.

    A PEFT adapter directory loads on top of `base_model` (default: the base its
    adapter_config.json records) and is merged into it, so it is scored and hashed as the full
    model it stands for (mmunlearn.harness.core.provenance).

    dtype default ("auto"): fp16 on GPU, as the official runs; fp32 on CPU.
    prompt_style: None = the architecture's default (see module docstring).
    Safe by default: weights load from safetensors only (`allow_pickle` lets a `.bin` pickle
    checkpoint load) and a checkpoint's own Python code runs only with `trust_remote_code`.
    device_map="auto" splits the model across the visible GPUs (accelerate's big-model loading);
    inputs then go to the device of the first parameters.
    """
    import transformers

    from mmunlearn.harness.core import provenance

    adapter = str(source) if provenance.is_adapter(source) else None
    source = provenance.weights_source(str(source), base_model)
    path = Path(source).expanduser()
    if not allow_pickle:
        for where in (Path(adapter), path) if adapter else (path,):
            _refuse_pickle_weights(where, str(where))
    config = _load_config(source, trust_remote_code)
    spec = _spec_for(config.model_type, f"model {source!r}")
    dev = _resolve_device(device)
    dt = _resolve_dtype(dtype, dev)
    src = str(path) if path.exists() else source
    cls = getattr(transformers, spec.model_class)
    try:
        model = cls.from_pretrained(
            src,
            dtype=dt,
            device_map=device_map or str(dev),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except Exception as e:
        raise ModelLoadError(f"cannot load {spec.model_class} weights from {source!r}: {e}") from e
    if adapter:
        from peft import PeftModel

        try:
            with warnings.catch_warnings():  # peft's use of a deprecated transformers property
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except Exception as e:
            raise ModelLoadError(f"cannot apply the PEFT adapter {adapter!r} to {source!r}: {e}") from e
    model.eval()
    processor = _load_processor(adapter if adapter and provenance.has_processor(adapter) else src, trust_remote_code)
    return VLM(model, processor, spec, adapter or source, prompt_style)


def wrap_vlm(model, processor, source: str = "<memory>", prompt_style: str | None = None) -> "VLM":
    """Adapter around an in-memory model. processor may be an (image_processor, tokenizer) pair
    for Qwen2-VL-style models (see SplitVLProcessor)."""
    spec = _spec_for(model.config.model_type, f"model {source!r}")
    if isinstance(processor, tuple):
        processor = SplitVLProcessor(*processor)
    return VLM(model, processor, spec, source, prompt_style)


def _left_pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class VLM:
    """A loaded vision-language model plus everything needed to prompt and score it."""

    def __init__(self, model, processor, spec: ArchSpec, source: str, prompt_style: str | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = _tokenizer_of(processor)
        self.arch = spec.model_type
        self.spec = spec
        self.source = source
        self.system_prompt: str | None = None
        style = prompt_style or self._default_style()
        if style not in PROMPT_STYLES:
            raise ConfigError(f"prompt_style {style!r} is not one of {PROMPT_STYLES}")
        if style == "chat-template" and not self._chat_template():
            raise ConfigError(f"prompt_style 'chat-template' asked for {source!r}, which has no chat template")
        self.prompt_style = style
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token is None:
                raise ModelLoadError(f"{source!r}: the tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self._eos_id()  # appended after training answers
        if self.eos_id is None:
            raise ModelLoadError(f"{source!r}: neither the generation config nor the tokenizer defines an eos token")
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT-wrapped
        self._needs_mm_token_types = "mm_token_type_ids" in inspect.signature(base.forward).parameters

    # ---- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _default_style(self) -> str:
        style = self.spec.prompt_style
        if self.arch == "llava_next":  # vicuna (llama) backbones use the USER/ASSISTANT style
            text_type = getattr(getattr(self.model.config, "text_config", None), "model_type", "llama")
            if text_type != "llama" and self._chat_template():
                style = "chat-template"
        return style

    def _chat_template(self):
        return getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)

    def _eos_id(self) -> int:
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        return eos if eos is not None else self.tokenizer.eos_token_id

    # ---- prompting --------------------------------------------------------------------------
    def prompt(self, req: Request) -> str:
        """Full model input text; it ends where the answer starts."""
        system = req.system if req.system is not None else self.system_prompt
        if self.prompt_style == "official":
            return official_prompt(req, self.image_token, system)
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        content = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": chat_user_text(req)}]
        messages.append({"role": "user", "content": content})
        templater = self.processor if hasattr(self.processor, "apply_chat_template") else self.tokenizer
        return templater.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ---- encoding ---------------------------------------------------------------------------
    def _process(self, texts: list[str], images: list) -> tuple[list[dict], dict]:
        """Run the processor; return per-row unpadded token lists (input_ids and any other
        per-token tensor such as mm_token_type_ids) and the image tensors."""
        kwargs = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        out = self.processor(**kwargs)
        ids, mask = out["input_ids"], out["attention_mask"].bool()
        per_token = [
            k
            for k, v in out.items()
            if k not in ("attention_mask", "token_type_ids") and isinstance(v, torch.Tensor) and v.shape == ids.shape
        ]
        rows = [{k: out[k][i][mask[i]].tolist() for k in per_token} for i in range(ids.shape[0])]
        extra = {k: v for k, v in out.items() if k not in per_token and k not in ("attention_mask", "token_type_ids")}
        return rows, extra

    def _rows(self, reqs: list[Request], texts: list[str]) -> tuple[list[dict], dict]:
        """Token rows in request order; image requests processed together so their image
        tensors line up with their image tokens (rows keep their relative order)."""
        img_idx = [i for i, r in enumerate(reqs) if r.images]
        for i in img_idx:
            for image in reqs[i].images:
                if not hasattr(image, "convert"):
                    raise ConfigError(
                        f"request {i}: image must be a PIL image, got {type(image).__name__} "
                        "(decode benchmark bytes with mmunlearn.harness.core.records.decode_image)"
                    )
        txt_idx = [i for i, r in enumerate(reqs) if not r.images]
        rows: list = [None] * len(reqs)
        extra: dict = {}
        if img_idx:
            r_img, extra = self._process([texts[i] for i in img_idx], [reqs[i].images for i in img_idx])
            for i, r in zip(img_idx, r_img):
                rows[i] = r
        if txt_idx:
            r_txt, _ = self._process([texts[i] for i in txt_idx], [])
            for i, r in zip(txt_idx, r_txt):
                rows[i] = r
        return rows, extra

    def _encode(self, reqs, answers=None, add_eos=True, prefixes=None) -> dict[str, torch.Tensor]:
        """prefixes: text already written after each prompt (the start of the answer); it is part
        of the input, and only what follows it is labelled."""
        reqs = list(reqs)
        if not reqs:
            raise ConfigError("encode: no requests given")
        prompts = [self.prompt(r) for r in reqs]
        if prefixes is not None:
            prompts = [p + " " + pre if pre else p for p, pre in zip(prompts, prefixes, strict=True)]
        prompt_rows, extra = self._rows(reqs, prompts)
        batch = {}
        if answers is None:
            rows = prompt_rows
        else:
            answers = list(answers)
            if len(answers) != len(reqs):
                raise ConfigError(f"encode: {len(reqs)} requests but {len(answers)} answers")
            full_rows, extra = self._rows(reqs, [p + " " + str(a) for p, a in zip(prompts, answers)])
            rows, labels = [], []
            for p, f in zip(prompt_rows, full_rows):
                # k == len(prompt) unless the tokenizer merged tokens across the prompt/answer boundary
                k = _common_prefix(p["input_ids"], f["input_ids"])
                if add_eos:
                    f = {key: val + ([self.eos_id] if key == "input_ids" else [0]) for key, val in f.items()}
                rows.append(f)
                labels.append([-100] * k + f["input_ids"][k:])
            batch["labels"] = _left_pad(labels, -100)
        for key in rows[0]:
            batch[key] = _left_pad([r[key] for r in rows], self.pad_id if key == "input_ids" else 0)
        batch["attention_mask"] = _left_pad([[1] * len(r["input_ids"]) for r in rows], 0)
        if self._needs_mm_token_types and "mm_token_type_ids" not in batch:
            batch["mm_token_type_ids"] = self._mm_token_types(batch["input_ids"])
        for key, value in extra.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.to(self.dtype)
            batch[key] = value
        dev = self.device
        return {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _mm_token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Qwen2-VL's M-RoPE input: 1 on image tokens, 2 on video tokens, 0 elsewhere (what its
        processor returns; built here when SplitVLProcessor stands in for it)."""
        types = torch.zeros_like(input_ids)
        for value, attr in ((1, "image_token_id"), (2, "video_token_id")):
            token = getattr(self.model.config, attr, None)
            if token is not None:
                types[input_ids == token] = value
        return types

    def encode(self, reqs, answers=None) -> dict[str, torch.Tensor]:
        """Left-padded batch on the model's device. With answers: prompt + " " + answer + eos,
        and `labels` = -100 on prompt and padding positions (for training / per-sample NLL)."""
        return self._encode(reqs, answers, add_eos=True)

    # ---- batching ---------------------------------------------------------------------------
    def _groups(self, reqs: list[Request]) -> list[list[int]]:
        """Request indices grouped by mode (image requests apart from text-only ones), each
        group sorted longest prompt first, so batches hold similar lengths and an
        out-of-memory error shows up on the first batch."""
        lengths = [len(self.tokenizer(self.prompt(r), add_special_tokens=False)["input_ids"]) for r in reqs]
        groups = [[i for i, r in enumerate(reqs) if bool(r.images) == has] for has in (True, False)]
        return [sorted(g, key=lambda i: -lengths[i]) for g in groups if g]

    def _run_batched(self, n_items: int, groups: list[list[int]], batch_size, fn, desc):
        """Apply fn(indices) -> list over length-sorted groups; on CUDA with batch_size=None start
        large and halve on out-of-memory. Returns results in input order."""
        from mmunlearn.harness.core.progress import progress_bar

        auto = batch_size is None
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        size = batch_size or (CUDA_START_BATCH_SIZE if self.device.type == "cuda" else CPU_BATCH_SIZE)
        results: list = [None] * n_items
        with progress_bar(total=n_items, desc=desc, disable=None) as bar:
            for group in groups:
                pos = 0
                while pos < len(group):
                    idx = group[pos : pos + size]
                    try:
                        outs = fn(idx)
                    except torch.cuda.OutOfMemoryError:
                        if not auto or size == 1:
                            raise
                        torch.cuda.empty_cache()
                        size //= 2
                        continue
                    for i, o in zip(idx, outs):
                        results[i] = o
                    pos += len(idx)
                    bar.update(len(idx))
        return results

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, reqs, max_new_tokens: int = 50, batch_size: int | None = None, desc: str | None = None
    ) -> list[str]:
        """Greedy decoding; returns the stripped new text per request, in input order."""
        reqs = list(reqs)
        if not reqs:
            return []

        def run(idx):
            batch = self._encode([reqs[i] for i in idx])
            out = self.model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=self.pad_id
            )
            new = out[:, batch["input_ids"].shape[1] :]
            return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

        was_training = self.model.training
        self.model.eval()
        try:
            return self._run_batched(len(reqs), self._groups(reqs), batch_size, run, desc)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def answer_logprobs(
        self,
        reqs,
        answers: list[str],
        batch_size: int | None = None,
        prefixes: list[str] | None = None,
        distribution: bool = False,
        desc: str | None = None,
    ) -> list[TokenStats]:
        """Per answer token, log p(token | prompt [+ " " + prefix] + the answer so far), the
        answer joined to the prompt as in training (" " + answer, no eos). With `distribution`,
        also the mean and standard deviation of log p under the model's whole next-token
        distribution at each of those positions (Min-K%++). The one forward every
        log-likelihood score of the harness reads."""
        reqs, answers = list(reqs), list(answers)
        if len(answers) != len(reqs):
            raise ConfigError(f"answer_logprobs: {len(reqs)} requests but {len(answers)} answers")
        if prefixes is not None and len(prefixes) != len(reqs):
            raise ConfigError(f"answer_logprobs: {len(reqs)} requests but {len(prefixes)} prefixes")

        def run(idx):
            batch = self._encode(
                [reqs[j] for j in idx],
                [answers[j] for j in idx],
                add_eos=False,
                prefixes=None if prefixes is None else [prefixes[j] for j in idx],
            )
            target = batch.pop("labels")[:, 1:]
            logits = self.model(**batch).logits[:, :-1]
            out = []
            for row in range(len(idx)):
                where = (target[row] != -100).nonzero().squeeze(-1)
                logp = torch.log_softmax(logits[row, where].float(), -1)
                stats = TokenStats(logp.gather(-1, target[row, where].unsqueeze(-1)).squeeze(-1).tolist())
                if distribution:
                    p = logp.exp()
                    mean = (p * logp).sum(-1)
                    var = (p * logp.square()).sum(-1) - mean.square()
                    stats.means, stats.stds = mean.tolist(), var.clamp(min=0).sqrt().tolist()
                out.append(stats)
            return out

        was_training = self.model.training
        self.model.eval()
        try:
            return self._run_batched(len(reqs), self._groups(reqs), batch_size, run, desc)
        finally:
            self.model.train(was_training)

    def option_logprobs(
        self,
        reqs,
        options: list[list[str]],
        batch_size: int | None = None,
        prefixes: list[str] | None = None,
    ) -> list[list[float]]:
        """sum log p(" " + option tokens | prompt) for every option of every request; with
        `prefixes`, log p(" " + option | prompt + " " + prefix), the option scored inside an
        answer that has already begun."""
        return [[sum(s.logps) for s in per] for per in self.option_token_logprobs(reqs, options, batch_size, prefixes)]

    def option_token_logprobs(
        self,
        reqs,
        options: list[list[str]],
        batch_size: int | None = None,
        prefixes: list[str] | None = None,
    ) -> list[list[TokenStats]]:
        """answer_logprobs of every option of every request (option_logprobs, token by token)."""
        reqs = list(reqs)
        if len(options) != len(reqs):
            raise ConfigError(f"option_logprobs: {len(reqs)} requests but {len(options)} option lists")
        if prefixes is not None and len(prefixes) != len(reqs):
            raise ConfigError(f"option_logprobs: {len(reqs)} requests but {len(prefixes)} prefixes")
        pairs = [(i, k) for i, opts in enumerate(options) for k in range(len(opts))]
        stats = self.answer_logprobs(
            [reqs[i] for i, _ in pairs],
            [options[i][k] for i, k in pairs],
            batch_size,
            None if prefixes is None else [prefixes[i] for i, _ in pairs],
        )
        out: list[list[TokenStats]] = [[] for _ in reqs]
        for (i, _), s in zip(pairs, stats):
            out[i].append(s)
        return out

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path) -> None:
        """save_pretrained model + processor. Pruned (zeroed) weights are ordinary weights, so a
        pruned model reloads with its zeros in place."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    def weights_hash(self) -> str:
        """sha256 over (name, dtype, shape, bytes) of every state_dict tensor, in name order."""
        h = hashlib.sha256()
        for name, t in sorted(self.model.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
