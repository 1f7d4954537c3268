"""The Typer application and the one place where errors become exit codes."""

from __future__ import annotations

import os
import sys

import click
import typer
from typer.core import TyperGroup

from smolcli.cli.output import cli_spelling
from smolcli.errors import SmolcliError
from smolcli.util.os_errors import os_error_text
from smolcli.util.termination import Terminated, handle_sigterm

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


# the functions that write to stdout: an OSError raised inside one is stdout's (/dev/full, a dead disk)
_STDOUT_WRITERS = {"echo", "write_answer", "flush"}


def _writing_stdout(error: OSError) -> bool:
    if error.filename is not None:
        return False
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_name in _STDOUT_WRITERS


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
        except Terminated as signal_received:
            # SIGTERM (systemd, docker stop, `timeout`): the stages were removed on the way here
            click.echo("terminated", err=True)
            ctx.exit(signal_received.exit_code)
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(0)
        except OSError as error:
            if _debug():
                raise
            if _writing_stdout(error):
                _quiet_stdout()  # what is still buffered would fail again at exit
                click.echo(f"error: {os_error_text(error, 'stdout')} (the output was cut short)", err=True)
            else:
                click.echo(f"error: {os_error_text(error)}", err=True)
            ctx.exit(1)
        except UnicodeError as error:
            if _debug():
                raise
            click.echo(f"error: text that is not UTF-8 ({error.reason}); give it in UTF-8", err=True)
            ctx.exit(1)
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

    from smolcli.cli import serve_cmd

    app.command("serve")(serve_cmd.serve)

    from smolcli.cli import watch_cmd

    app.command("watch")(watch_cmd.watch_source)


_register_commands()


def _stdout_is_open() -> bool:
    try:
        os.fstat(1)
    except OSError:
        return False
    return sys.stdout is not None


def _flush_stdout() -> int | None:
    """Flush the answer now, where a failure can still be reported (at exit Python prints a traceback)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except OSError as error:
        _quiet_stdout()
        print(f"error: {os_error_text(error, 'stdout')} (the output was cut short)", file=sys.stderr)
        return 1
    return None


def main() -> None:
    if not _stdout_is_open():
        # a closed stdout (`>&-`) would let the next file opened take descriptor 1 and receive the answer
        print(
            "error: stdout is closed, so the output has nowhere to go; redirect it (> out.txt or > /dev/null)",
            file=sys.stderr,
        )
        sys.exit(1)
    handle_sigterm()
    code: int | str | None = 0
    try:
        app()
    except KeyboardInterrupt:
        code = 130
    except Terminated as signal_received:
        code = signal_received.exit_code
    except SystemExit as done:
        code = done.code
    failed_flush = _flush_stdout()
    sys.exit(failed_flush if failed_flush is not None and not code else code)
