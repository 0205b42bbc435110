"""Run the CLI in this process, the way the tests need it: exit code, stdout and stderr."""

from __future__ import annotations

from typing import Any


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run ``robustbench-rpc ARGV`` in-process; return (exit code, stdout, stderr)."""
    from robustbench_rpc.cli.app import main

    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
