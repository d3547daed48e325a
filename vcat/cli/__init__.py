"""The ``vcat`` command. Each capability lives in its own module and registers here."""

from __future__ import annotations

import re
from typing import Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from vcat import __version__
from vcat.cli import api, apikey, audit, index, models, synth, train, up, worker
from vcat.cli.common import CLIError, err_console

app = typer.Typer(
    name="vcat",
    help="vcat: a self-hosted video catalogue searchable by action.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """vcat: a self-hosted video catalogue searchable by action."""


@app.command()
def version() -> None:
    """Print the vcat version."""
    typer.echo(__version__)


app.command("up")(up.up)
app.command("api")(api.api)
app.command("migrate")(up.migrate_cmd)
app.add_typer(apikey.app, name="apikey")
app.command("audit")(audit.audit)
app.command("synth")(synth.synth)
app.command("train")(train.train)
app.command("eval")(train.evaluate)
app.command("index")(index.index)
app.add_typer(models.app, name="models")
app.command("worker")(worker.worker)


def _settings_error(exc: ValidationError | SettingsError) -> str:
    """One line naming the VCAT_* variable(s) that Settings rejected."""
    if isinstance(exc, SettingsError):  # a list setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"VCAT_{field.group(1).upper()}" if field else "VCAT_*"
        return f'{name}: cannot parse the value (a list is JSON, e.g. ["a", "b"])'
    parts = []
    for e in exc.errors():
        name = "VCAT_" + "_".join(str(p) for p in e["loc"][:1]).upper()
        parts.append(f"{name}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


# click's UsageError and ClickException, wherever this Typer keeps click (newer releases vendor it)
_UsageError: Any = typer.BadParameter.__base__
_ClickException: Any = _UsageError.__base__


def main() -> None:
    # Not standalone: click would print usage errors as a multi-line panel; here they are one
    # line like every other error, and an exit status comes back as the return value.
    try:
        code = app(standalone_mode=False, prog_name="vcat")
    except _UsageError as exc:
        message = exc.format_message()
        if message:  # empty when no arguments were given and the help was printed instead
            where = exc.ctx.command_path if exc.ctx is not None else "vcat"
            _error(f"{message} (see `{where} --help`)")
        raise SystemExit(exc.exit_code) from None
    except _ClickException as exc:
        _error(exc.format_message())
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        _error("aborted")
        raise SystemExit(1) from None
    except CLIError as exc:
        _error(str(exc))
        raise SystemExit(1) from None
    except (ValidationError, SettingsError) as exc:
        # Settings are read lazily by each command; other models' errors are bugs: re-raise.
        if isinstance(exc, ValidationError) and exc.title != "Settings":
            raise
        _error(_settings_error(exc))
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)
