"""Where a scored model came from: the base model it was unlearned from, and PEFT adapters.

A researcher brings an unlearned checkpoint made elsewhere: a full model directory saved by any
HF trainer, or a PEFT adapter directory (`adapter_config.json`) that only makes sense on top of
its base. `--base-model` names that base. For a full model it is provenance, checked and
recorded; for an adapter it is also what the adapter is merged into. The check is cheap (configs
and tokenizers, no weights) and runs before anything is written: a checkpoint unlearned from
another model family or with another vocabulary cannot be compared with its claimed base, so it
is refused with what differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mmunlearn.harness.core.errors import ConfigError, ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def is_adapter(source) -> bool:
    """True for a local PEFT adapter directory (adapter_config.json, no full model)."""
    return (Path(str(source)).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_base(source) -> str | None:
    """The base model an adapter records (`base_model_name_or_path`), if any."""
    path = Path(str(source)).expanduser() / ADAPTER_CONFIG
    try:
        value = json.loads(path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    return str(value) if value else None


def has_processor(source) -> bool:
    """Whether a directory carries its own tokenizer/processor files (adapters often do not)."""
    path = Path(str(source)).expanduser()
    return any((path / f).is_file() for f in PROCESSOR_FILES)


def weights_source(model: str, base_model: str | None) -> str:
    """Where the model's full weights load from: the base under an adapter, else the model."""
    if not is_adapter(model):
        return model
    base = base_model or adapter_base(model)
    if not base:
        raise ConfigError(
            f"{model!r} is a PEFT adapter that names no base model: give the model it was trained on with --base-model"
        )
    return base


@dataclass(frozen=True)
class Identity:
    """What must agree between a checkpoint and its base: architecture family and vocabulary."""

    model_type: str
    vocab_size: int
    vocab_sha256: str


def _vocabulary(source: str, trust_remote_code: bool) -> tuple[int, str]:
    from mmunlearn.harness.core.model import _load_processor, _tokenizer_of

    vocab = _tokenizer_of(_load_processor(source, trust_remote_code)).get_vocab()
    return len(vocab), hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


def identity(source: str, trust_remote_code: bool = False) -> Identity:
    """The architecture family (config.model_type) and vocabulary of a full model."""
    from mmunlearn.harness.core.model import _load_config

    config = _load_config(source, trust_remote_code)
    return Identity(config.model_type, *_vocabulary(source, trust_remote_code))


def check_base(model: str, base_model: str, trust_remote_code: bool = False) -> dict:
    """The provenance record of `model` unlearned from `base_model`; ConfigError (saying what
    differs) when the two are not the same architecture family and vocabulary."""
    base = identity(base_model, trust_remote_code)
    if is_adapter(model):
        # An adapter has no config of its own: its architecture is its base's; its vocabulary is
        # its own tokenizer's when it ships one (else the base's, by construction).
        mine = base
        if has_processor(model):
            size, sha = _vocabulary(model, trust_remote_code)
            mine = replace(base, vocab_size=size, vocab_sha256=sha)
    else:
        mine = identity(model, trust_remote_code)
    differ = []
    if mine.model_type != base.model_type:
        differ.append(f"architecture {mine.model_type!r} vs base {base.model_type!r}")
    if (mine.vocab_size, mine.vocab_sha256) != (base.vocab_size, base.vocab_sha256):
        differ.append(
            f"a vocabulary of {mine.vocab_size} tokens (sha256 {mine.vocab_sha256[:12]}) vs the base's "
            f"{base.vocab_size} (sha256 {base.vocab_sha256[:12]})"
        )
    if differ:
        raise ConfigError(f"model {model!r} was not unlearned from --base-model {base_model!r}: " + "; ".join(differ))
    record: dict = {"adapter": is_adapter(model), **asdict(base)}
    if is_adapter(model):
        record["adapter_records_base"] = adapter_base(model)
    return record


def base_of(model: str, base_model: str | None) -> str | None:
    """The base a run records: --base-model, else the one an adapter names, else none."""
    if base_model:
        return base_model
    return weights_source(model, None) if is_adapter(model) else None  # an adapter must name one
