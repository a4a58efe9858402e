"""Command-line interface: a thin click group over the library.

Every subcommand lives in the module of the concept it drives and is registered here.
User errors (:class:`genoseg.errors.GenosegError`, ``ValueError`` from input validation)
become one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import sys

import click

from genoseg import __version__
from genoseg.errors import GenosegError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (GenosegError, ValueError, FileNotFoundError, PermissionError) as exc:
            click.echo(f"genoseg: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="genoseg")
def cli() -> None:
    """genoseg: exact semi-Markov CRF gene annotation."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="genoseg", standalone_mode=True)


from genoseg.eval.cli import eval_command, plot_command  # noqa: E402

cli.add_command(eval_command)
cli.add_command(plot_command)

from genoseg.data.prepare import prepare_command  # noqa: E402

cli.add_command(prepare_command)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
