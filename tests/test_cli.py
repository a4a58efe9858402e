"""genoseg.cli: commands are imported lazily, so help and argument errors stay fast.

What is imported is tested, not timing: torch, numba, h5py and pysam must not be loaded by
``import genoseg.cli``, ``genoseg --help`` or ``genoseg CMD --help`` / argument errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from genoseg.cli import COMMANDS, cli

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numba", "h5py", "pysam", "triton", "matplotlib")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it sets ``out`` (dict); returns out plus the
    heavy modules that got imported."""
    script = (
        "import sys, json\nout = {}\n"
        + code
        + f"\nout['heavy'] = [m for m in {HEAVY!r} if m in sys.modules]"
        + "\nprint(json.dumps(out))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _main(args: list[str]) -> str:
    return (
        "import contextlib, io\nfrom genoseg.cli import main\nbuf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
        "    try:\n"
        f"        main({args!r})\n"
        "    except SystemExit as e:\n"
        "        out['code'] = e.code\n"
        "out['text'] = buf.getvalue()"
    )


def test_import_cli_loads_no_heavy_module():
    assert _run("import genoseg.cli")["heavy"] == []


def test_top_level_help_lists_every_command_without_importing_them():
    out = _run(_main(["--help"]))
    assert out["code"] == 0 and out["heavy"] == []
    for name, (_, short) in COMMANDS.items():
        assert name in out["text"] and short[:40] in out["text"], (name, out["text"])
    version = _run(_main(["--version"]))
    assert version["code"] == 0 and "genoseg" in version["text"] and version["heavy"] == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_and_argument_errors_load_no_heavy_module(name):
    """The pattern of genoseg/cli.py: a command's module is light at top level."""
    out = _run(_main([name, "--help"]))
    assert out["code"] == 0 and out["heavy"] == [], out
    assert "Usage: genoseg " + name in out["text"]
    bad = _run(_main([name, "--no-such-option"]))
    assert bad["code"] == 2 and "No such option" in bad["text"] and bad["heavy"] == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_registered_help_is_the_commands_own(name):
    cmd = cli.get_command(None, name)
    assert isinstance(cmd, click.Command) and cmd.name == name
    assert COMMANDS[name][1] == cmd.get_short_help_str(limit=200)


def test_unknown_command_and_user_errors_are_one_line():
    res = CliRunner().invoke(cli, ["prepar"])
    assert res.exit_code == 2 and "No such command 'prepar'" in res.output
    res = CliRunner().invoke(cli, ["prepare", "--fasta", "nope.fa", "--gff3", "x", "-o", "o.h5"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == ["genoseg: error: nope.fa: FASTA file not found"]
