"""Benchmark specs: one TOML file names the models (and grids over their options), suites, attacks, seeds and
settings; ``robustbench-rpc run SPEC --out DIR`` runs it into one results directory and writes the tables, plots
and report. :func:`load_spec` reads and validates, :func:`run_spec` runs, :func:`dry_run` plans and estimates."""

from __future__ import annotations

from robustbench_rpc.spec.schema import BenchmarkSpec, ModelVariant, load_spec

__all__ = ["BenchmarkSpec", "ModelVariant", "dry_run", "load_spec", "run_spec"]


def run_spec(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Run a spec into a results directory; see :func:`robustbench_rpc.spec.run.run_spec`."""
    from robustbench_rpc.spec.run import run_spec as run

    return run(*args, **kwargs)


def dry_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Plan a spec with estimated times; see :func:`robustbench_rpc.spec.dry_run.dry_run`."""
    from robustbench_rpc.spec.dry_run import dry_run as plan

    return plan(*args, **kwargs)
