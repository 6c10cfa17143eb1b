"""`mmunlearn` console script: one subcommand per module in harness/app/commands/.

A command module defines NAME, HELP, add_arguments(parser) and run(args) -> int.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from mmunlearn.harness.app import commands
from mmunlearn.harness.core import distributed
from mmunlearn.harness.core.errors import MMUnlearnError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmunlearn",
        description="Benchmark harness for machine unlearning in multimodal LLMs: every number split by modality.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"mmunlearn.harness.app.commands.{info.name}")
        # argparse %-formats help strings: a literal "5%" in HELP must not break --help.
        p = sub.add_parser(module.NAME, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False) or getattr(args, "no_progress", False):
        from mmunlearn.harness.core.progress import set_quiet

        set_quiet(True)
    try:
        code = int(args._run(args) or 0)
        distributed.shutdown()
    except MMUnlearnError as exc:
        print(f"mmunlearn {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:  # disk full, permission lost, ...: the environment, not the input
        print(
            f"mmunlearn {args.command}: error: {exc} (everything written so far is kept: fix this and "
            "rerun the same command to resume)",
            file=sys.stderr,
        )
        code = 3
    distributed.exit_launched_process(code)  # under accelerate/torchrun: ends the process here
    return code


if __name__ == "__main__":
    sys.exit(main())
