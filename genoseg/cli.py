"""Command-line interface: a thin click group over the library.

Every subcommand lives in the module of the concept it drives and is registered here *by
import path*, so ``genoseg --help``, ``genoseg --version`` and argument errors never import
torch, numba, h5py or pysam (tests/test_cli.py checks what ``import genoseg.cli`` and
``genoseg CMD --help`` load).

Adding a command (the pattern every command follows):

1. Write the click command in a *light* module, e.g. ``genoseg/train/cli.py``: at top level
   import only ``click``, the standard library and light genoseg modules
   (``genoseg.errors``, ``genoseg.config``, ``genoseg.io.atomic``); import the heavy
   library inside the command function::

       @click.command("train")
       @click.option("-c", "--config", ...)
       def train_command(config):
           \"\"\"Train a model from HDF5 windows.\"\"\"
           from genoseg.train.loop import train   # torch is imported here, not at startup
           train(...)

2. Register it in :data:`COMMANDS` below: ``"train": ("genoseg.train.cli:train_command",
   "one-line help")``. The one-line help is what ``genoseg --help`` lists (the module is
   not imported for that); keep it equal to the first line of the command's docstring
   (tests/test_cli.py checks).

User errors (:class:`genoseg.errors.GenosegError`, ``ValueError`` from input validation)
become one line on stderr and exit code 1, never a traceback. Commands that write files use
:mod:`genoseg.io.atomic` (temporaries renamed on success, removed on errors and signals).
"""

from __future__ import annotations

import importlib
import sys

import click

from genoseg import __version__
from genoseg.errors import GenosegError

__all__ = ["COMMANDS", "LazyGroup", "cli", "main"]

#: name -> ("module:attribute" of the click command, one-line help for ``genoseg --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": (
        "genoseg.data.cli:prepare_command",
        "Label a genome from its annotation and write training windows to HDF5.",
    ),
    "predict": (
        "genoseg.predict.cli:predict_command",
        "Annotate genes in GENOME (FASTA) with exact posteriors: GFF3, BED, tracks.",
    ),
    "train": (
        "genoseg.train.cli:train_command",
        "Train a gene model from prepared HDF5 windows (CNN encoder + exact semi-CRF).",
    ),
    "eval": (
        "genoseg.eval.cli:eval_command",
        "Accuracy of PREDICTION against REFERENCE (GFF3 or GTF, any tool).",
    ),
    "plot": (
        "genoseg.eval.cli:plot_command",
        "Draw REGION (chr:start-end, 1-based inclusive) with gene models and posterior tracks.",
    ),
    "merge": (
        "genoseg.workflow.cli:merge_command",
        "Merge the outputs of genoseg predict --shard i/n into one GFF3 (BED, tracks).",
    ),
    "index": (
        "genoseg.workflow.cli:index_command",
        "Validate and index a FASTA once (before many predict jobs); list its contigs.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (see :data:`COMMANDS`).

    ``genoseg --help`` lists the registered one-line helps without importing anything;
    ``genoseg CMD ...`` imports only CMD's module. User errors become one line, exit 1.
    """

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            target = self.lazy[name][0]
            module, _, attr = target.partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            if not isinstance(cmd, click.Command):  # a programming error in COMMANDS
                raise TypeError(f"{target} is not a click command")
            self.add_command(cmd, name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, self.lazy[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (GenosegError, ValueError, FileNotFoundError, PermissionError) as exc:
            click.echo(f"genoseg: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="genoseg")
def cli() -> None:
    """genoseg: exact semi-Markov CRF gene annotation."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="genoseg", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
