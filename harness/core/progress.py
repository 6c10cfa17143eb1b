"""One switch for every progress bar: `--quiet` silences ours and those of the libraries we call
(transformers' weight loading and saving, datasets' downloads). Errors still print."""

from __future__ import annotations

import os

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Silence (or re-enable) every progress bar of this process."""
    global _quiet
    _quiet = quiet
    os.environ["TQDM_DISABLE"] = "1" if quiet else ""  # bars of libraries that honour tqdm's variable
    try:
        from transformers.utils import logging as hf_logging

        (hf_logging.disable_progress_bar if quiet else hf_logging.enable_progress_bar)()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import datasets

        (datasets.disable_progress_bars if quiet else datasets.enable_progress_bars)()
    except ImportError:  # pragma: no cover
        pass


def progress_bar(iterable=None, **kwargs):
    """tqdm, silenced under --quiet. `disable=None` keeps tqdm's own choice (off without a TTY)."""
    from tqdm.auto import tqdm

    if _quiet:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
