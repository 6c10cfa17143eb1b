"""Run defaults shared by the CLI and the runner: where the embedded benchmark and model live
(shipped inside the package), the default seed, the model dtypes one can ask for."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "embedded" / "assets"
DEFAULT_BENCH = ASSETS / "minibench"
DEFAULT_MODEL = ASSETS / "tiny-llava"
# CLEAR's layout built from the mini-bench's people (harness.embedded.mini_clear).
MINI_CLEAR = ASSETS / "mini-clear"
# The same recipe with the forget 15 profiles left out (train-tiny --leave-out-forget): the
# reference of privleak and forget quality (stages.privacy).
DEFAULT_REFERENCE_MODEL = ASSETS / "tiny-llava-reference"
DEFAULT_SEED = 0
# The demo and the tiny model's checks use forget 15: 9 profiles, at least 54 questions per
# (task, mode) in the forget set (forget 5 has 3 profiles: too few questions to measure on).
DEMO_FORGET = 15
DTYPES = ("auto", "float16", "bfloat16", "float32")  # auto: float16 on GPU (as the official runs), float32 on CPU
