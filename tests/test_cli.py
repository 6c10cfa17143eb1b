"""The console script's help works for the tool and every subcommand (argparse %-formats help)."""

import pytest

from mmunlearn.harness.app.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    return sorted(parser._subparsers._group_actions[0].choices)


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: mmunlearn {name}" in capsys.readouterr().out
