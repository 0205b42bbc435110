"""``robustbench-rpc audit``: run what the checks need (reusing finished cells), judge, store each check as a cell.

For each budget the audit runs PGD (the reference), FGSM, uniform noise, Square, PGD with twice the steps and two
restarts, and, where they apply, the transfer attack (RPC models: the same weights without PAP, or ``--surrogate``),
PGD with BPDA for PAP (models with PAP layers) and AutoAttack; then PGD at an unbounded budget (Linf 0.5) and a
stability probe (repeated passes, tiny noise). Every run is an ordinary attack or probe cell of the results
directory, so a second audit, or one after ``attack`` runs, reuses what is finished. Each check's verdict is stored
as a cell (condition ``audit``, params ``check``) whose records are the evidence samples.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_rpc.audit.checks import (
    CHECKS,
    PER_EPS_CHECKS,
    Cell,
    CheckResult,
    check_monotone,
    check_unbounded,
    check_unstable,
    parse_checks,
)
from robustbench_rpc.errors import UserError

#: The unbounded budget of ``unbounded-not-zero`` for Linf (half the pixel range: any image reaches mid-grey).
UNBOUNDED_LINF = 0.5


@dataclass
class AuditSettings:
    """How hard the audit looks: budgets, checks, thresholds, sample counts and attack strengths."""

    eps: list[float]
    norm: str = "Linf"
    checks: list[str] = field(default_factory=lambda: list(CHECKS))
    thresholds: dict[str, float] = field(default_factory=dict)
    quick: bool = False
    limit: int | None = None
    pgd_steps: int = 20
    square_queries: int = 5000
    autoattack_limit: int | None = None
    probe_repeats: int = 4
    noise_fraction: float = 0.05  # the probe's noise, as a fraction of the smallest budget (Linf)
    unbounded: float = UNBOUNDED_LINF  # the budget of unbounded-not-zero (set from the norm and the input size)

    def threshold(self, check: str) -> float:
        """The threshold of ``check`` (overridden or its default)."""
        return float(self.thresholds.get(check, CHECKS[check].threshold))

    def wants(self, *checks: str) -> bool:
        """True when any of ``checks`` is selected."""
        return any(c in self.checks for c in checks)


@dataclass
class AttackRun:
    """One ``attack`` call of the audit: attacks, budgets, options and sample limit, and why it runs."""

    attacks: list[str]
    eps: list[float]
    options: dict[str, Any]
    limit: int | None
    purpose: str


@dataclass
class AuditSummary:
    """What the audit found: the check verdicts and, per budget, the lowest robust accuracy and its attack."""

    out: Path
    results: list[CheckResult]
    lowest: list[dict[str, Any]]
    cells_run: int = 0
    cells_reused: int = 0
    rank: int = 0  # under torchrun the ranks other than 0 return no verdicts (rank 0 judges and reports)


def unbounded_eps(norm: str, input_size: Sequence[int]) -> float:
    """Return the unbounded budget: Linf 0.5, L2 half the diagonal of the image cube."""
    if norm == "Linf":
        return UNBOUNDED_LINF
    return 0.5 * math.sqrt(math.prod(int(s) for s in input_size))


def plan_runs(settings: AuditSettings, *, has_pap: bool, transfer: bool) -> list[AttackRun]:
    """Return the attack runs the selected checks need (each becomes ordinary attack cells)."""
    s, eps, runs = settings, settings.eps, []
    base: list[str] = []
    if s.wants("zero-gradients", "silent-success", "incomplete-optimization", "single-step-beats-iterative",
               "blackbox-beats-whitebox", "transfer-beats-whitebox", "bpda-beats-whitebox", "noise-beats-attack",
               "more-steps-helps", "eps-not-monotone", "unbounded-not-zero", "autoattack-beats-pgd"):
        base.append("pgd")
    if s.wants("single-step-beats-iterative", "noise-beats-attack") and s.norm == "Linf":
        base.append("fgsm")
    if s.wants("noise-beats-attack") and s.norm == "Linf":
        base.append("noise")
    if s.wants("blackbox-beats-whitebox"):
        base.append("square")
    if s.wants("transfer-beats-whitebox") and transfer:
        base.append("transfer")
    if base:
        options: dict[str, Any] = {"pgd.steps": s.pgd_steps}
        if "square" in base:
            options["square.queries"] = s.square_queries
        runs.append(AttackRun(base, eps, options, s.limit, "reference attacks"))
    if s.wants("more-steps-helps", "incomplete-optimization", "autoattack-beats-pgd"):
        runs.append(AttackRun(["pgd"], eps, {"steps": 2 * s.pgd_steps, "restarts": 2}, s.limit,
                              "PGD with twice the steps and two restarts"))
    if s.wants("bpda-beats-whitebox") and has_pap:
        runs.append(AttackRun(["pgd"], eps, {"steps": s.pgd_steps, "bpda": True}, s.limit, "PGD with BPDA for PAP"))
    if s.wants("unbounded-not-zero", "eps-not-monotone"):
        runs.append(AttackRun(["pgd"], [s.unbounded], {"steps": s.pgd_steps}, s.limit, "PGD at an unbounded budget"))
    if s.wants("autoattack-flags", "autoattack-beats-pgd"):
        runs.append(AttackRun(["autoattack"], eps, {}, s.autoattack_limit or s.limit, "AutoAttack and its checks"))
    return runs


def _request(model_kwargs: Mapping[str, Any]) -> Any:
    """The api's model request for the audit's model arguments."""
    from robustbench_rpc.api import ModelRequest

    return ModelRequest(model_kwargs["model"], model_kwargs.get("checkpoint"), model_kwargs.get("model_name"),
                        dict(model_kwargs.get("model_options") or {}), bool(model_kwargs.get("trust_checkpoint")),
                        bool(model_kwargs.get("use_ema")), model_kwargs.get("num_classes"),
                        dict(model_kwargs.get("preprocessing") or {}))


def _model_info(model_kwargs: Mapping[str, Any], seed: int) -> tuple[bool, tuple[int, ...]]:
    """Load the model once: does it have PAP layers, and its input size."""
    from robustbench_rpc.models.adaptive import pap_modules

    model, _, _ = _request(model_kwargs).load(seed)
    input_size = tuple(getattr(model, "preprocessing", {}).get("input_size", (3, 224, 224)))
    return bool(pap_modules(model)), input_size


def audit(
    model: Any,
    checkpoint: str | Path | None = None,
    *,
    out: str | Path,
    eps: str | Sequence[float] = "4/255,8/255",
    norm: str = "Linf",
    checks: str | Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    quick: bool = False,
    dataset: str = "imagenet",
    data: str | Path | None = None,
    limit: int | None = None,
    subset: str | None = None,
    labels_file: str | None = None,
    class_list: str | None = None,
    surrogate: Any = None,
    model_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    num_classes: int | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **run_options: Any,
) -> AuditSummary:
    """Audit a model's robustness evaluation at the budgets ``eps`` and return the verdicts (see the module doc).

    ``quick`` fits the digits models on 2 CPU cores in about a minute: 64 samples, Square with 300 queries and
    AutoAttack on 32 samples (unless ``limit`` says otherwise).
    """
    from robustbench_rpc.attacks import normalize_norm, parse_eps

    norm = normalize_norm(norm)
    if norm not in ("Linf", "L2"):
        raise UserError(f"The audit supports the Linf and L2 norms, not {norm}.")
    eps_values = parse_eps(eps, norm=norm) if isinstance(eps, str) else [float(e) for e in eps]
    if not eps_values or any(e <= 0 for e in eps_values):
        raise UserError("The audit needs budgets above 0; pass --eps, e.g. --eps 4/255,8/255.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}.")
    settings = AuditSettings(sorted(set(eps_values)), norm, parse_checks(checks), dict(thresholds or {}), quick,
                             limit if limit is not None else (64 if quick else None),
                             square_queries=300 if quick else 5000, autoattack_limit=32 if quick else None)
    model_kwargs = {"model": model, "checkpoint": checkpoint, "model_options": dict(model_options or {}),
                    "model_name": model_name, "trust_checkpoint": trust_checkpoint, "use_ema": use_ema,
                    "num_classes": num_classes, "preprocessing": dict(preprocessing or {})}
    data_kwargs = {"dataset": dataset, "data": data, "subset": subset, "labels_file": labels_file,
                   "class_list": class_list}
    seed = int(run_options.get("seed", 0))
    has_pap, input_size = _model_info(model_kwargs, seed)
    settings.unbounded = unbounded_eps(norm, input_size)
    runs = plan_runs(settings, has_pap=has_pap, transfer=has_pap or surrogate is not None)
    return _execute(settings, runs, model_kwargs, data_kwargs, surrogate, run_options, Path(out))


def _execute(settings: AuditSettings, runs: list[AttackRun], model_kwargs: dict[str, Any],
             data_kwargs: dict[str, Any], surrogate: Any, run_options: dict[str, Any], out: Path) -> AuditSummary:
    from robustbench_rpc.engine.distributed import process_group

    with process_group(run_options.get("device")) as ctx:  # under torchrun: one group for all the audit's runs
        written, skipped, specs = _attack_and_probe(settings, runs, model_kwargs, data_kwargs, surrogate,
                                                    run_options, out)
        if not specs:
            raise UserError("The selected checks need no attack or probe; choose other --checks.")
        if not ctx.is_main:  # rank 0 reads the cells it wrote, judges and writes the check cells
            return AuditSummary(out, [], [], written, skipped, rank=ctx.rank)
        from robustbench_rpc.audit.evidence import gather_cells, write_check_cells

        cells, probe = gather_cells(out, specs[0], settings.norm, data_kwargs["dataset"])
        results = evaluate_checks(settings, cells, probe)
        write_check_cells(out, specs[0], settings, results)
    return AuditSummary(out, results, lowest_found(cells, settings.eps), written, skipped)


def _attack_and_probe(settings: AuditSettings, runs: list[AttackRun], model_kwargs: dict[str, Any],
                      data_kwargs: dict[str, Any], surrogate: Any, run_options: dict[str, Any],
                      out: Path) -> tuple[int, int, list[Any]]:
    """Run the audit's attacks and its stability probe; return the cells written, skipped and their specs."""
    from robustbench_rpc.api import attack

    written, skipped, specs = 0, 0, []
    for run in runs:
        print(f"audit: {run.purpose}: {', '.join(run.attacks)}", file=sys.stderr)
        summary = attack(**model_kwargs, **data_kwargs, out=out, attacks=run.attacks, eps=run.eps,
                         norm=settings.norm, attack_options=run.options, limit=run.limit,
                         surrogate=surrogate, **run_options)
        written, skipped = written + len(summary.written), skipped + len(summary.skipped)
        specs.extend([*summary.written, *summary.skipped])
    if settings.wants("unstable-predictions"):
        print("audit: stability probe", file=sys.stderr)
        probe_summary = _probe(settings, model_kwargs, data_kwargs, run_options, out)
        written, skipped = written + len(probe_summary.written), skipped + len(probe_summary.skipped)
        specs.extend([*probe_summary.written, *probe_summary.skipped])
    return written, skipped, specs


def _probe(settings: AuditSettings, model_kwargs: dict[str, Any], data_kwargs: dict[str, Any],
           run_options: dict[str, Any], out: Path) -> Any:
    from robustbench_rpc.api import RunOptions, run_plan
    from robustbench_rpc.engine.attack_plan import build_stability_jobs

    request = _request(model_kwargs)
    run = RunOptions(**run_options)
    noise = settings.noise_fraction * min(settings.eps) if settings.norm == "Linf" else 0.5 / 255

    def build(identity: dict[str, Any], prep: Mapping[str, Any], device: Any, model: Any) -> list[Any]:
        return build_stability_jobs(identity, prep, limit=settings.limit, repeats=settings.probe_repeats,
                                    noise_linf=noise, seed=run.seed, **data_kwargs)

    return run_plan(request, out, run, build, "audit")


def evaluate_checks(settings: AuditSettings, cells: list[Cell], probe: Cell | None) -> list[CheckResult]:
    """Judge every selected check on the stored cells (per budget for per-budget checks)."""
    results: list[CheckResult] = []
    for check in settings.checks:
        threshold = settings.threshold(check)
        if check in PER_EPS_CHECKS:
            for eps in settings.eps:
                at = [c for c in cells if math.isclose(c.eps, eps, rel_tol=1e-9)]
                results.append(PER_EPS_CHECKS[check](at, eps, threshold))
        elif check == "unstable-predictions":
            results.append(check_unstable(probe, threshold))
        elif check == "eps-not-monotone":
            results.append(check_monotone(cells, threshold))
        elif check == "unbounded-not-zero":
            results.append(check_unbounded(cells, settings.unbounded, threshold))
    return results


def lowest_found(cells: list[Cell], eps_values: Sequence[float]) -> list[dict[str, Any]]:
    """Per budget: the lowest robust accuracy of a single attack, and the worst case over all attacks run."""
    from robustbench_rpc.results.worst_case import WorstCaseGroup, attack_labels, worst_case_metrics

    rows = []
    for eps in eps_values:
        at = [c for c in cells if math.isclose(c.eps, eps, rel_tol=1e-9)]
        if not at:
            continue
        labels = attack_labels([c.spec for c in at])
        best = min(range(len(at)), key=lambda i: at[i].robust())
        group = WorstCaseGroup()
        for c in at:
            group.add(c.spec, c.records)
        metrics = {m: (v, n) for m, v, n in worst_case_metrics(group.per_sample())}
        worst, n = metrics.get("robust_top1", (math.nan, 0))
        rows.append({"eps": eps, "attack": labels[best], "robust_top1": at[best].robust(), "n": len(at[best].records),
                     "worst_case": worst, "worst_case_n": n, "attacks": len(at)})
    return rows
