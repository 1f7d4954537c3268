"""The Typer application and the one place where errors become exit codes."""

from __future__ import annotations

import os
import sys

import click
import typer
from typer.core import TyperGroup

from smolcli.cli.output import cli_spelling
from smolcli.errors import SmolcliError

DEBUG_ENV = "SMOLCLI_DEBUG"


# Typer >= 0.20 vendors click: its Exit/Abort/usage errors are its own classes, not click's.
_CLI_SIGNALS = tuple(
    {click.exceptions.Exit, click.exceptions.Abort, click.ClickException, typer.Exit, typer.Abort}
    | ({typer.TyperException} if hasattr(typer, "TyperException") else set())
)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _quiet_stdout() -> None:
    # stdout was closed by the reader (`| head`): point it at devnull so the
    # interpreter's final flush does not raise again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class SmolcliGroup(TyperGroup):
    """Catches errors once, at the edge: one line on stderr, a meaningful exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _CLI_SIGNALS:
            raise
        except SmolcliError as error:
            if _debug():
                raise
            click.echo(f"error: {error.text(cli_spelling)}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            if _debug():
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(0)
        except Exception as error:  # noqa: BLE001 - the edge: anything unexpected still gets one line
            if _debug():
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            click.echo(
                f"error: unexpected {type(error).__name__}: {message} (set {DEBUG_ENV}=1 for the traceback)",
                err=True,
            )
            ctx.exit(1)


app = typer.Typer(
    name="smolcli",
    cls=SmolcliGroup,
    help="Run SmolVLM vision-language models offline through llama.cpp.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Run SmolVLM vision-language models offline through llama.cpp."""


def _register_commands() -> None:
    from smolcli.cli import convert_adapter_cmd, convert_cmd

    app.command("convert")(convert_cmd.convert)
    app.command("convert-adapter")(convert_adapter_cmd.convert_adapter)

    from smolcli.cli import ask_cmd, chat_cmd

    app.command("ask")(ask_cmd.ask)
    app.command("chat")(chat_cmd.chat)

    from smolcli.cli import batch_cmd

    app.command("batch")(batch_cmd.batch)

    from smolcli.cli import demo_cmd, doctor_cmd, info_cmd

    app.command("demo")(demo_cmd.demo)
    app.command("info")(info_cmd.info)
    app.command("doctor")(doctor_cmd.doctor)

    from smolcli.cli import models_cmd, pull_cmd, rm_cmd

    app.command("pull")(pull_cmd.pull)
    app.command("models")(models_cmd.models)
    app.command("rm")(rm_cmd.rm)

    from smolcli.cli import bench_cmd, cache_cmd

    app.add_typer(cache_cmd.app, name="cache")
    app.command("bench")(bench_cmd.bench)


_register_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
