"""What both benchmark scripts share: which model to measure, the LLaVA-1.5-7B-shaped random
model (no download), threads, quiet mode, wall clocks and the JSON figures file.

`--model DIR|HUB_ID` loads a checkpoint with `mmunlearn.harness.core.model.load_vlm` (default: the embedded
tiny LLaVA). `--shape llava-7b` instead builds a `LlavaForConditionalGeneration` with random
weights from a config of LLaVA-1.5-7B's shape (CLIP ViT-L/14-336 + Llama-2-7B/Vicuna), a
word-level tokenizer over the benchmark's words padded to the 32,064-entry vocabulary and a
336-px CLIP image processor whose `LlavaProcessor` expands `<image>` to (336/14)^2 = 576
tokens, exactly as the real checkpoint's processor does. It needs CUDA (bf16 by default); on a
CPU it is refused unless `--layers K` shrinks it for a smoke run (`--width-div D` also divides
the hidden and MLP widths and the head counts, for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL, DEMO_FORGET
from mmunlearn.harness.core.records import MODES, SETS, TASKS
from mmunlearn.harness.embedded.tiny_data import BOS, EOS, IMAGE_TOKEN, PAD, UNK, build_processor, vocabulary_texts
from mmunlearn.harness.embedded.tiny_recipe import greedy_decoding, llava_config


class BenchmarkUsageError(SystemExit):
    """A refused configuration: exits with status 2 and a readable message on stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


@dataclass(frozen=True)
class Shape:
    """Sizes of a LLaVA-style model (vision tower, projector, language model, tokenizer)."""

    name: str
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    image_size: int
    patch_size: int
    projection_dim: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int
    vocab_size: int
    max_positions: int
    image_token_id: int
    pad_token_id: int

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def shrunk(self, layers: int | None = None, width_div: int = 1) -> "Shape":
        """Fewer layers (both towers, the vision tower capped at its own depth) and/or widths
        and head counts divided by `width_div` (head dimension kept)."""
        s = self
        if layers is not None:
            s = replace(s, text_layers=layers, vision_layers=min(layers, s.vision_layers))
        if width_div > 1:
            d = width_div
            s = replace(
                s,
                vision_hidden=max(1, s.vision_heads // d) * (s.vision_hidden // s.vision_heads),
                vision_heads=max(1, s.vision_heads // d),
                vision_mlp=max(1, s.vision_mlp // d),
                projection_dim=max(1, s.projection_dim // d),
                text_hidden=max(1, s.text_heads // d) * (s.text_hidden // s.text_heads),
                text_heads=max(1, s.text_heads // d),
                text_mlp=max(1, s.text_mlp // d),
            )
        return s


# LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14 at 336 px, Vicuna-7B (Llama-2-7B shape),
# image token 32000, pad 32001, vocabulary padded to 32064.
SHAPES = {
    "llava-7b": Shape(
        name="llava-7b",
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_mlp=4096,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        text_hidden=4096,
        text_layers=32,
        text_heads=32,
        text_mlp=11008,
        vocab_size=32064,
        max_positions=4096,
        image_token_id=32000,
        pad_token_id=32001,
    ),
}


# ----------------------------------------------------------------------------- arguments


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="model directory or hub id (default: the embedded tiny LLaVA)"
    )
    g.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default=None,
        help="build a random-weight model of this shape instead of loading --model (needs CUDA)",
    )
    g.add_argument(
        "--layers", type=int, default=None, help="with --shape: this many layers per tower (smoke runs; allowed on CPU)"
    )
    g.add_argument(
        "--width-div",
        type=int,
        default=1,
        help="with --shape: divide hidden/MLP widths and head counts by this (tests)",
    )
    g.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="auto: --shape bf16 on CUDA; --model as load_vlm (fp16 on CUDA); fp32 on CPU",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights (--shape)")
    d = parser.add_argument_group("data")
    d.add_argument("--bench", default=str(DEFAULT_BENCH), help="benchmark folder or hub id")
    d.add_argument("--forget", type=int, default=DEMO_FORGET, choices=(5, 10, 15), help="forget split")
    o = parser.add_argument_group("output")
    o.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, i.e. OMP_NUM_THREADS or all cores)",
    )
    o.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    o.add_argument("--progress", action="store_true", help="show progress bars (default: none)")
    o.add_argument("--quiet", action="store_true", help="no progress bars (the default; kept for symmetry)")


def add_question_arguments(group) -> None:
    """--set, --task, --mode: which benchmark questions a per-question benchmark times."""
    group.add_argument("--set", default="retain", choices=SETS)
    group.add_argument("--task", default="cloze", choices=TASKS)
    group.add_argument("--mode", default="image_text", choices=MODES)


def setup(args) -> None:
    """Threads, progress bars and library chatter, before anything heavy runs."""
    from mmunlearn.harness.core.progress import set_quiet

    if args.threads is not None:
        if args.threads < 1:
            raise BenchmarkUsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    set_quiet(not args.progress or args.quiet)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # one summary line, not generation-config warnings
    except ImportError:  # pragma: no cover
        pass
    if args.layers is not None and args.layers < 1:
        raise BenchmarkUsageError(f"--layers must be >= 1, got {args.layers}")
    if args.width_div < 1:
        raise BenchmarkUsageError(f"--width-div must be >= 1, got {args.width_div}")
    if args.shape is None and (args.layers is not None or args.width_div != 1):
        raise BenchmarkUsageError("--layers and --width-div shrink a --shape model; they do not apply to --model")


def run_main(body, argv) -> int:
    """Call body(argv) -> int, turning a refused configuration into a message and exit code 2."""
    try:
        return body(argv)
    except BenchmarkUsageError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e.message}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------- models


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkUsageError(f"--device {name} asked for, but this machine has no CUDA device")
    return dev


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(args, bench):
    """(vlm, label): the VLM to measure and the name the summary line gives it."""
    from mmunlearn.harness.core.model import load_vlm

    if args.shape is None:
        dev = resolve_device(args.device)
        vlm = load_vlm(args.model, device=str(dev), dtype=None if args.dtype == "auto" else args.dtype)
        return vlm, Path(str(args.model).rstrip("/")).name or str(args.model)
    shape = SHAPES[args.shape]
    dev = resolve_device(args.device)
    if dev.type != "cuda" and args.layers is None:
        where = "this machine has no CUDA device" if not torch.cuda.is_available() else f"--device {dev} was asked for"
        raise BenchmarkUsageError(
            f"--shape {args.shape} builds a {approx_params(shape) / 1e9:.1f} B-parameter model "
            f"({approx_params(shape) * 2 / 2**30:.0f} GiB in bf16): it needs a CUDA GPU and does not fit a laptop "
            f"CPU; {where}. For a smoke run on CPU add --layers K (e.g. --layers 1)"
        )
    dtype = DTYPES.get(args.dtype) or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    shape = shape.shrunk(args.layers, args.width_div)
    vlm = build_shape_vlm(shape, bench, dev, dtype, seed=args.seed)
    label = shape.name
    if args.layers is not None or args.width_div > 1:
        label += f"[layers={shape.text_layers}" + (f",width/{args.width_div}" if args.width_div > 1 else "") + "]"
    return vlm, label


def approx_params(shape: Shape) -> int:
    """Parameter count of a LLaVA of this shape (weights only, biases and norms included roughly)."""
    v, t = shape.vision_hidden, shape.text_hidden
    vision = (
        shape.vision_layers * (4 * v * v + 2 * v * shape.vision_mlp + 9 * v)
        + (shape.image_tokens + 1) * v
        + 3 * 14 * 14 * v
    )
    projector = v * t + t * t + 2 * t
    text = shape.text_layers * (4 * t * t + 3 * t * shape.text_mlp + 2 * t) + 2 * shape.vocab_size * t
    return vision + projector + text


def shape_tokenizer(shape: Shape, texts):
    """Word-level tokenizer with exactly `shape.vocab_size` entries, ids as LLaVA-1.5's:
    <unk>=0, <s>=1, </s>=2, the benchmark's words, filler tokens up to <image>=image_token_id,
    <pad>=pad_token_id, fillers to the end (so every id a random model emits decodes)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = sorted(
        {w for text in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text.replace(IMAGE_TOKEN, " ")))}
    )
    fixed = {shape.image_token_id: IMAGE_TOKEN, shape.pad_token_id: PAD}
    head = [UNK, BOS, EOS] + words
    if len(head) > min(fixed):
        raise BenchmarkUsageError(f"the benchmark has {len(words)} distinct words; more than fit below id {min(fixed)}")
    vocab, nxt = {}, iter(head)
    for i in range(shape.vocab_size):
        vocab[fixed.get(i) or next(nxt, None) or f"<w{i}>"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=True,
    )
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.padding_side = "left"
    assert fast.convert_tokens_to_ids(IMAGE_TOKEN) == shape.image_token_id and len(fast) == shape.vocab_size
    return fast


def shape_config(shape: Shape, tokenizer):
    """LLaVA-1.5's configuration at `shape`'s sizes (feature layer -2, quick_gelu, RMSNorm eps 1e-5)."""
    vision = dict(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_mlp,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.projection_dim,
        hidden_act="quick_gelu",
    )
    text = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_mlp,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        max_position_embeddings=shape.max_positions,
        rms_norm_eps=1e-5,
    )
    return llava_config(tokenizer, vision, text, vision_feature_layer=-2, image_seq_length=shape.image_tokens)


def build_shape_vlm(shape: Shape, bench, device, dtype, seed: int = 0):
    """A random-weight LLaVA of `shape` built directly on `device` in `dtype`, wrapped as a VLM."""
    from transformers import LlavaForConditionalGeneration

    from mmunlearn.harness.core.model import wrap_vlm

    tokenizer = shape_tokenizer(shape, vocabulary_texts(bench))
    processor = build_processor(tokenizer, shape.image_size, shape.patch_size)
    cfg = shape_config(shape, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=dtype)
    greedy_decoding(model).eval().requires_grad_(False)
    return wrap_vlm(model, processor, source=f"shape:{shape.name}")


def model_facts(vlm) -> dict:
    """Parameter count, device and dtype of the measured model (for the JSON file)."""
    return {
        "parameters": int(sum(p.numel() for p in vlm.model.parameters())),
        "device": str(vlm.device),
        "dtype": str(vlm.dtype).replace("torch.", ""),
        "arch": vlm.arch,
        "source": vlm.source,
    }


# ----------------------------------------------------------------------------- measuring


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(result, seconds) of fn(), with CUDA work finished before the clock is read."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def environment(device) -> dict:
    dev = torch.device(device)
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    env.update(cpu_load())
    return env


def cpu_load() -> dict:
    """Load average and Linux CPU pressure at this moment (recorded in the JSON file)."""
    out = {}
    try:
        out["loadavg"] = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux/macOS
        pass
    try:
        with open("/proc/pressure/cpu") as fh:
            out["cpu_pressure_some_avg10"] = float(fh.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def _jiffies() -> tuple[int, int] | None:
    """(busy CPU ticks of the whole machine, CPU ticks of this process), Linux only."""
    try:
        with open("/proc/stat") as fh:
            user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fh.readline().split()[1:8])
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return user + nice + system + irq + softirq, int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


class OtherLoad:
    """How many CPU cores other processes kept busy, on average, while the block ran: the
    machine's busy time minus this process's, over the wall time. CPU figures taken while
    other work runs are meaningless (two OpenMP pools on the same cores slow each other by
    orders of magnitude), so the scripts warn on stderr above `threshold` cores."""

    def __init__(self, threshold: float = 0.25):
        self.threshold, self.cores = threshold, None

    def __enter__(self):
        self._start, self._t = _jiffies(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        end, wall = _jiffies(), time.perf_counter() - self._t
        if self._start is not None and end is not None and wall > 0:
            ticks = os.sysconf("SC_CLK_TCK")
            other = (end[0] - self._start[0]) - (end[1] - self._start[1])
            self.cores = max(0.0, other / ticks / wall)
        return False

    def warn(self, device) -> None:
        if torch.device(device).type == "cpu" and self.cores is not None and self.cores > self.threshold:
            print(
                f"warning: other processes kept {self.cores:.2f} CPU cores busy during the measurement "
                f"({os.cpu_count()} on this machine); these CPU figures are unreliable, re-run on an idle machine",
                file=sys.stderr,
            )


def write_json(path, figures: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")


def shape_dict(shape: Shape) -> dict:
    return asdict(shape)
