"""Where the embedded default benchmark and model live (shipped inside the package)."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_BENCH = ASSETS / "minibench"
DEFAULT_MODEL = ASSETS / "tiny-llava"
DEFAULT_SEED = 0
