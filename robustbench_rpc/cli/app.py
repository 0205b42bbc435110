"""The ``robustbench-rpc`` command: one Typer app, one module per command group, heavy imports inside commands."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from robustbench_rpc import __version__
from robustbench_rpc.cli import demo as demo_cli
from robustbench_rpc.cli import models as models_cli
from robustbench_rpc.cli.audit import audit_command
from robustbench_rpc.cli.compare import compare_command, plot_command, report_command
from robustbench_rpc.cli.corrupt import corrupt_command
from robustbench_rpc.cli.diagnose import diagnose_command
from robustbench_rpc.cli.evaluate import attack_command, evaluate_command
from robustbench_rpc.cli.merge import merge_command
from robustbench_rpc.cli.run import run_command
from robustbench_rpc.cli.table import table_command
from robustbench_rpc.errors import UserError

app = typer.Typer(
    name="robustbench-rpc",
    help="Robustness evaluation of SymViT, RPC-SymViT, FAN, RPC-FAN and any timm model: "
    "ImageNet(-C/-A/-R/-O) tables, adversarial attacks over budgets, side-by-side comparisons.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(demo_cli.app, name="demo")
app.command("evaluate")(evaluate_command)
app.command("attack")(attack_command)
app.command("audit")(audit_command)
app.command("run")(run_command)
app.command("corrupt")(corrupt_command)
app.command("diagnose")(diagnose_command)
app.command("table")(table_command)
app.command("merge")(merge_command)
app.command("compare")(compare_command)
app.command("plot")(plot_command)
app.command("report")(report_command)
app.add_typer(models_cli.app, name="models")

_STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustbench-rpc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """Robustness evaluation of attention variants."""
    _STATE["debug"] = debug or bool(os.environ.get("ROBUSTBENCH_RPC_DEBUG"))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors print one line on stderr and exit with status 2.

    Usage errors (missing or unknown options, bad values) are reported by Typer itself in standalone mode, with a
    usage line and exit status 2; :class:`UserError` from the library passes through it and is shown here.

    A process that joined a torch.distributed group (torchrun) ends with ``os._exit`` after flushing its output:
    gloo's threads can otherwise abort the process while C++ objects are torn down at interpreter exit
    ("terminate called without an active exception"), turning a finished run or a clear error into a crash.
    """
    try:
        _main(argv)
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    status = code if isinstance(code, int) else (0 if code is None else 1)
    distributed = sys.modules.get("robustbench_rpc.engine.distributed")  # never imported: no group was made
    if distributed is not None and distributed.created_group():
        if isinstance(code, str):
            print(code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(code)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Print this package's warnings as one plain sentence; others as Python prints them."""
    ours = Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    if category.__module__.startswith("robustbench_rpc") or ours:
        typer.echo(f"Warning: {message}", err=True)
        return
    _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _main(argv: list[str] | None) -> None:
    command = typer.main.get_command(app)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("ROBUSTBENCH_RPC_DEBUG"))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            command.main(args=argv, prog_name="robustbench-rpc", standalone_mode=True)
    except UserError as exc:
        if debug:
            raise
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        again = "again without --force" if "--force" in (argv if argv is not None else sys.argv[1:]) else "again"
        typer.echo("Interrupted; finished cells and the finished batches of the cells in progress are kept: run "
                   f"the same command {again} to resume.", err=True)
        sys.exit(130)
