"""The ``vcat`` command. Each capability lives in its own module and registers here."""

from __future__ import annotations

import typer

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


def main() -> None:
    try:
        app()
    except CLIError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
