"""The audit's checks: pure functions of stored attack and probe cells that say whether an evaluation can be trusted.

Every check yields a value and a threshold in the same unit, and flags when ``value > threshold``. Accuracies and
shares are in percent. Comparisons between two attacks are made on the samples both ran on (paired by
``sample_id``); ``value`` is then how many points the attack that should be weaker got *below* the one that should
be stronger, and a flag also needs :data:`MIN_EVIDENCE` samples broken by the first attack alone. Each check also
marks, per sample, the evidence that made it fire (``flagged``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.names import eps_text
from robustbench_rpc.results.schema import CellSpec

#: Attacks that follow the target's own gradients (AutoAttack is left out: it contains Square).
GRADIENT_ATTACKS = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "cw", "sld")
#: Gradient-free attacks.
BLACK_BOX_ATTACKS = ("square", "spsa")
#: A comparison of two attacks flags only when at least this many samples were broken by the one alone.
MIN_EVIDENCE = 2


@dataclass(frozen=True)
class CheckDefinition:
    """One check: its id, what it tests, its default threshold (same unit as its value) and whether it is per eps."""

    id: str
    tests: str
    threshold: float
    unit: str
    per_eps: bool = True


CHECK_LIST: tuple[CheckDefinition, ...] = (
    CheckDefinition("zero-gradients", "samples whose input gradient was zero or non-finite at every PGD step",
                    2.0, "% of samples"),
    CheckDefinition("unstable-predictions", "predictions that change between repeated forward passes or under "
                    "uniform noise far below the budget", 1.0, "% of samples", per_eps=False),
    CheckDefinition("silent-success", "clean-correct samples still counted robust although the attack evaluated a "
                    "misclassified point inside the budget", 0.0, "% of clean-correct samples"),
    CheckDefinition("incomplete-optimization", "still-robust samples whose loss, in the strongest PGD run, was still "
                    "rising over the last fifth of the steps (by more than 5% of its range)", 25.0,
                    "% of robust samples"),
    CheckDefinition("single-step-beats-iterative", "FGSM lower than PGD at the same budget", 2.0, "points"),
    CheckDefinition("blackbox-beats-whitebox", "Square or SPSA lower than the best gradient attack", 2.0, "points"),
    CheckDefinition("transfer-beats-whitebox", "the transfer attack lower than the best gradient attack on the "
                    "target itself", 2.0, "points"),
    CheckDefinition("bpda-beats-whitebox", "PGD with BPDA for PAP lower than PGD through PAP", 2.0, "points"),
    CheckDefinition("noise-beats-attack", "uniform noise of the same budget lower than a gradient attack", 2.0,
                    "points"),
    CheckDefinition("more-steps-helps", "PGD with twice the steps and two restarts lower than PGD", 5.0, "points"),
    CheckDefinition("eps-not-monotone", "an attack's robust accuracy rising with the budget", 2.0, "points",
                    per_eps=False),
    CheckDefinition("unbounded-not-zero", "PGD robust accuracy with an unbounded budget (Linf 0.5) above ~0", 5.0,
                    "% robust", per_eps=False),
    CheckDefinition("autoattack-beats-pgd", "AutoAttack lower than the strongest PGD run: PGD's fixed step size or "
                    "iteration budget does not suit this model, so PGD numbers understate the attack", 5.0, "points"),
    CheckDefinition("autoattack-flags", "warnings of AutoAttack's own checks (randomized or dynamic defence, zero "
                    "gradients, Square beating the gradient attacks)", 0.0, "warnings"),
)
CHECKS: dict[str, CheckDefinition] = {c.id: c for c in CHECK_LIST}


def parse_checks(text: str | Sequence[str] | None) -> list[str]:
    """Return the check ids of a comma list (None or 'all': every check); an unknown id is a UserError."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "all")):
        return list(CHECKS)
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    for item in items:
        if item not in CHECKS:
            raise UserError(f"Unknown audit check {item!r}{did_you_mean(item, CHECKS)}; known checks: "
                            f"{', '.join(CHECKS)}.")
    return list(dict.fromkeys(items))


def parse_thresholds(items: Sequence[str] | None) -> dict[str, float]:
    """Read ``CHECK=VALUE`` threshold overrides (``--threshold more-steps-helps=5``)."""
    out: dict[str, float] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().lower()
        if not sep:
            raise UserError(f"Cannot read threshold {item!r}; expected CHECK=VALUE, e.g. more-steps-helps=5.")
        parse_checks([key])
        try:
            out[key] = float(value)
        except ValueError:
            raise UserError(f"The threshold of {key} must be a number, got {value!r}.") from None
    return out


@dataclass
class Cell:
    """A stored cell the checks read: its spec, records and metadata."""

    spec: CellSpec
    records: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The attack name (or the probe's name)."""
        return str(self.spec.params.get("name") or self.spec.params.get("probe") or "")

    @property
    def eps(self) -> float:
        """The budget (NaN for probes)."""
        value = self.spec.params.get("eps")
        return float(value) if value is not None else math.nan

    @property
    def options(self) -> dict[str, Any]:
        """The attack options."""
        return dict(self.spec.params.get("options") or {})

    def robust(self) -> float:
        """Robust top-1 accuracy in %."""
        return 100.0 * float(self.records["correct1"].astype(bool).mean()) if len(self.records) else math.nan

    def label(self) -> str:
        """A short label: name, the options that differ from the attack's defaults, and eps."""
        from robustbench_rpc.attacks import ATTACKS

        if self.spec.condition != "attack":
            return f"{self.name} probe"

        definition = ATTACKS.get(self.name)
        defaults = definition.defaults if definition is not None else {}
        special = {k: v for k, v in sorted(self.options.items()) if k in defaults and defaults[k] != v}
        options = "[" + ",".join(f"{k}={v}" for k, v in special.items()) + "]" if special else ""
        return f"{self.name}{options} eps {eps_text(self.eps, self.spec.params.get('norm', 'Linf'))}"


@dataclass
class CheckResult:
    """The verdict of one check (at one eps, or over all budgets for global checks)."""

    check: str
    eps: float | None
    status: str  # pass | flag | skip
    value: float
    threshold: float
    detail: str
    evidence: list[Cell] = field(default_factory=list)
    flagged: pd.DataFrame | None = None  # the reference records with a bool column ``flagged``

    @property
    def tests(self) -> str:
        """What the check tests."""
        return CHECKS[self.check].tests


def _verdict(check: str, eps: float | None, value: float, threshold: float, detail: str, evidence: list[Cell],
             flagged: pd.DataFrame | None) -> CheckResult:
    status = "skip" if math.isnan(value) else ("flag" if value > threshold else "pass")
    return CheckResult(check, eps, status, value, threshold, detail, evidence, flagged)


def _skip(check: str, eps: float | None, threshold: float, why: str) -> CheckResult:
    return CheckResult(check, eps, "skip", math.nan, threshold, why)


def _with_flags(reference: Cell, flags: pd.Series) -> pd.DataFrame:
    frame = reference.records.copy()
    frame["flagged"] = flags.reindex(frame.index, fill_value=False).astype(bool).to_numpy()
    return frame


def plain_pgd(cells: Sequence[Cell]) -> Cell | None:
    """The reference PGD cell: no BPDA, no restarts, float32, the fewest steps."""
    plain = [c for c in cells if c.name == "pgd" and not c.options.get("bpda") and int(c.options.get("restarts", 1))
             == 1 and c.options.get("attack_dtype", "float32") == "float32" and not c.options.get("straight_through")]
    return min(plain, key=lambda c: int(c.options.get("steps", 0)), default=None)


def _paired(a: Cell, b: Cell) -> tuple[pd.Series, pd.Series]:
    """Robust-correct flags of ``a`` and ``b`` on their common samples (indexed by sample id)."""
    ra = a.records.drop_duplicates("sample_id").set_index("sample_id")["correct1"].astype(bool)
    rb = b.records.drop_duplicates("sample_id").set_index("sample_id")["correct1"].astype(bool)
    common = ra.index.intersection(rb.index, sort=False)
    return ra.loc[common], rb.loc[common]


def _gap(check: str, eps: float, weaker: Cell | None, stronger: Cell | None, threshold: float,
         missing: str) -> CheckResult:
    """Flag when ``weaker`` (should be the weaker attack) is lower than ``stronger`` by more than the threshold."""
    if weaker is None or stronger is None:
        return _skip(check, eps, threshold, missing)
    w, s = _paired(weaker, stronger)
    if not len(w):
        return _skip(check, eps, threshold, f"{weaker.label()} and {stronger.label()} share no samples")
    value = 100.0 * (float(s.mean()) - float(w.mean()))
    evidence_ids = set(w.index[~w & s])
    reference = stronger
    flags = reference.records["sample_id"].isin(evidence_ids)
    detail = (f"{weaker.label()}: {100 * w.mean():.1f}% vs {stronger.label()}: {100 * s.mean():.1f}% on {len(w)} "
              f"common samples; {len(evidence_ids)} broken only by the first")
    result = _verdict(check, eps, value, threshold, detail, [weaker, stronger], _with_flags(reference, flags))
    if result.status == "flag" and len(evidence_ids) < MIN_EVIDENCE:
        result.status = "pass"
        result.detail += f" (fewer than {MIN_EVIDENCE} samples: not flagged)"
    return result


def _lowest(cells: Sequence[Cell]) -> Cell | None:
    return min(cells, key=lambda c: c.robust(), default=None)


def check_zero_gradients(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """Share of samples whose gradient was zero or non-finite at every traced step of the reference PGD."""
    pgd = plain_pgd(cells)
    if pgd is None or "trace_steps" not in pgd.records or not int(pgd.records["trace_steps"].max()):
        return _skip("zero-gradients", eps, threshold, "no traced PGD cell at this budget")
    r = pgd.records
    steps = r["trace_steps"].astype(int)
    dead = (steps > 0) & ((r["grad_zero_steps"] + r["grad_nonfinite_steps"]) >= steps)
    value = 100.0 * float(dead.mean())
    nonfinite = int((r["grad_nonfinite_steps"] > 0).sum())
    detail = (f"{int(dead.sum())} of {len(r)} samples had no usable gradient at any of the {int(steps.max())} steps "
              f"of {pgd.label()}; {nonfinite} had non-finite gradients; median initial gradient norm "
              f"{float(r['grad_norm0'].median()):.3g}")
    return _verdict("zero-gradients", eps, value, threshold, detail, [pgd], _with_flags(pgd, dead))


def check_silent_success(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """Clean-correct samples still counted robust although an in-budget iterate was misclassified."""
    traced = [c for c in cells if "iterate_adv" in c.records and int(c.records.get("trace_steps", pd.Series([0]))
                                                                       .max()) > 0]
    if not traced:
        return _skip("silent-success", eps, threshold, "no traced attack cell at this budget")
    worst, worst_value, recovered, flags_of = None, -1.0, 0, None
    for cell in traced:
        r = cell.records
        clean = r["clean_correct"].astype(bool)
        silent = clean & r["iterate_adv"].astype(bool) & r["correct1"].astype(bool)
        recovered += int(r["best_iterate_used"].astype(bool).sum())
        value = 100.0 * float(silent.sum()) / max(int(clean.sum()), 1)
        if value > worst_value:
            worst, worst_value, flags_of = cell, value, silent
    assert worst is not None and flags_of is not None
    detail = (f"{int(flags_of.sum())} unrecovered in {worst.label()}; the best-iterate rule recovered {recovered} "
              f"silent successes over {len(traced)} traced cells (their stored predictions are for that iterate)")
    return _verdict("silent-success", eps, worst_value, threshold, detail, traced, _with_flags(worst, flags_of))


def loss_still_rising(trace: Sequence[float], tail: float = 0.2, rel: float = 0.05) -> bool:
    """True when the best loss of the last ``tail`` of a trace exceeds the best before it by ``rel`` of its range."""
    values = [float(v) for v in trace if v == v]
    if len(values) < 5:
        return False
    k = max(1, round(len(values) * tail))
    head, end = values[:-k], values[-k:]
    spread = max(values) - min(values)
    return spread > 0 and max(end) - max(head) > rel * spread


def strongest_pgd(cells: Sequence[Cell]) -> Cell | None:
    """The traced PGD cell (no BPDA) with the most gradient steps (steps x restarts)."""
    traced = [c for c in cells if c.name == "pgd" and not c.options.get("bpda") and "trace_steps" in c.records
              and int(c.records["trace_steps"].max()) > 0]
    return max(traced, key=lambda c: int(c.options.get("steps", 0)) * int(c.options.get("restarts", 1)), default=None)


def check_incomplete_optimization(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """Share of still-robust samples whose loss was still rising at the end of the strongest PGD run."""
    pgd = strongest_pgd(cells)
    if pgd is None or "trace_loss" not in pgd.records:
        return _skip("incomplete-optimization", eps, threshold, "no traced PGD cell at this budget")
    r = pgd.records
    robust = r["correct1"].astype(bool) & r["clean_correct"].astype(bool)
    rising = r["trace_loss"].map(lambda t: loss_still_rising(list(t) if t is not None else [])) & robust
    if not int(robust.sum()):
        return _skip("incomplete-optimization", eps, threshold, f"no sample is robust under {pgd.label()}")
    value = 100.0 * float(rising.sum()) / int(robust.sum())
    detail = (f"{int(rising.sum())} of {int(robust.sum())} robust samples under {pgd.label()} ("
              f"{int(r['trace_steps'].max())} steps) were still gaining loss at the end")
    return _verdict("incomplete-optimization", eps, value, threshold, detail, [pgd], _with_flags(pgd, rising))


def check_single_step(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """FGSM lower than the reference PGD."""
    fgsm = _lowest([c for c in cells if c.name == "fgsm"])
    return _gap("single-step-beats-iterative", eps, fgsm, plain_pgd(cells), threshold, "needs an FGSM and a PGD cell")


def _best_gradient(cells: Sequence[Cell]) -> Cell | None:
    return _lowest([c for c in cells if c.name in GRADIENT_ATTACKS])


def check_blackbox(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """Square / SPSA lower than the best gradient attack."""
    black = _lowest([c for c in cells if c.name in BLACK_BOX_ATTACKS])
    return _gap("blackbox-beats-whitebox", eps, black, _best_gradient(cells), threshold,
                "needs a Square or SPSA cell and a gradient-attack cell")


def check_transfer(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """The transfer attack lower than the best gradient attack on the target."""
    transfer = _lowest([c for c in cells if c.name == "transfer"])
    missing = "needs a transfer cell (an RPC model, or --surrogate) and a gradient-attack cell"
    return _gap("transfer-beats-whitebox", eps, transfer, _best_gradient(cells), threshold, missing)


def check_bpda(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """PGD with BPDA for PAP lower than PGD through PAP."""
    bpda = _lowest([c for c in cells if c.name == "pgd" and c.options.get("bpda")])
    return _gap("bpda-beats-whitebox", eps, bpda, plain_pgd(cells), threshold,
                "needs a PGD cell with bpda=true (models with PAP layers)")


def check_noise(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """Uniform noise lower than a gradient attack (the weakest one)."""
    noise = _lowest([c for c in cells if c.name == "noise"])
    gradient = [c for c in cells if c.name in GRADIENT_ATTACKS]
    weakest = max(gradient, key=lambda c: c.robust(), default=None)
    return _gap("noise-beats-attack", eps, noise, weakest, threshold, "needs a noise cell and a gradient-attack cell")


def check_more_steps(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """PGD with more steps and restarts lower than the reference PGD."""
    ref = plain_pgd(cells)
    if ref is None:
        return _skip("more-steps-helps", eps, threshold, "needs a PGD cell")
    budget = int(ref.options.get("steps", 0))
    stronger = [c for c in cells if c.name == "pgd" and not c.options.get("bpda")
                and int(c.options.get("steps", 0)) * int(c.options.get("restarts", 1)) > budget]
    return _gap("more-steps-helps", eps, _lowest(stronger), ref, threshold,
                "needs a PGD cell with more steps or restarts")


def check_autoattack_vs_pgd(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """AutoAttack lower than the strongest PGD run on their common samples."""
    strongest = [c for c in cells if c.name == "pgd" and not c.options.get("bpda")]
    pgd = max(strongest, key=lambda c: int(c.options.get("steps", 0)) * int(c.options.get("restarts", 1)),
              default=None)
    aa = _lowest([c for c in cells if c.name == "autoattack"])
    return _gap("autoattack-beats-pgd", eps, aa, pgd, threshold, "needs an AutoAttack and a PGD cell")


def check_autoattack(cells: Sequence[Cell], eps: float, threshold: float) -> CheckResult:
    """AutoAttack's own warnings, kept with its cells."""
    aa = [c for c in cells if c.name == "autoattack"]
    if not aa:
        return _skip("autoattack-flags", eps, threshold, "needs an AutoAttack cell")
    warnings = sorted({line for c in aa for line in (c.meta.get("extra") or {}).get("attack_log", [])
                       if line.startswith("warning: ")})
    detail = "; ".join(w[len("warning: "):] for w in warnings) or "AutoAttack raised no warning"
    return _verdict("autoattack-flags", eps, float(len(warnings)), threshold, detail, aa, None)


PER_EPS_CHECKS: dict[str, Callable[[Sequence[Cell], float, float], CheckResult]] = {
    "zero-gradients": check_zero_gradients,
    "silent-success": check_silent_success,
    "incomplete-optimization": check_incomplete_optimization,
    "single-step-beats-iterative": check_single_step,
    "blackbox-beats-whitebox": check_blackbox,
    "transfer-beats-whitebox": check_transfer,
    "bpda-beats-whitebox": check_bpda,
    "noise-beats-attack": check_noise,
    "more-steps-helps": check_more_steps,
    "autoattack-beats-pgd": check_autoattack_vs_pgd,
    "autoattack-flags": check_autoattack,
}


def check_unstable(probe: Cell | None, threshold: float) -> CheckResult:
    """Predictions that change between repeated passes or under tiny noise (the stability probe's records)."""
    if probe is None:
        return _skip("unstable-predictions", None, threshold, "no stability probe cell")
    r = probe.records
    repeat, noise = r["pred_changed"].astype(bool), r["noise_pred_changed"].astype(bool)
    changed = repeat | noise
    value = 100.0 * float(changed.mean()) if len(r) else math.nan
    params = probe.spec.params
    detail = (f"{int(repeat.sum())} of {len(r)} predictions changed over {params.get('repeats')} repeated passes, "
              f"{int(noise.sum())} under uniform noise of Linf {float(params.get('noise_linf', 0)) * 255:.3g}/255; "
              f"largest logit change between repeats {float(r['max_logit_diff'].max()):.3g}")
    return _verdict("unstable-predictions", None, value, threshold, detail, [probe], _with_flags(probe, changed))


def check_monotone(cells: Sequence[Cell], threshold: float) -> CheckResult:
    """An attack whose robust accuracy rises with the budget: cells identical but for eps, on their common samples."""
    series: dict[str, list[Cell]] = {}
    for cell in cells:
        rest = {k: v for k, v in cell.spec.params.items() if k != "eps"}
        series.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(cell)
    worst_value, worst = -math.inf, None
    for members in series.values():
        members = sorted(members, key=lambda c: c.eps)
        for low, high in zip(members, members[1:], strict=False):
            lo, hi = _paired(low, high)
            if not len(lo) or math.isclose(low.eps, high.eps):
                continue
            rise = 100.0 * (float(hi.mean()) - float(lo.mean()))
            if rise > worst_value:
                worst_value, worst = rise, (low, high, set(hi.index[hi & ~lo]), len(lo))
    if worst is None:
        return _skip("eps-not-monotone", None, threshold, "needs one attack at two or more budgets")
    low, high, evidence, n = worst
    detail = (f"largest rise on {n} common samples: {low.label()} -> {high.label()}: {worst_value:+.1f} points"
              if worst_value > 0 else "robust accuracy never rises with the budget")
    flags = high.records["sample_id"].isin(evidence)
    return _verdict("eps-not-monotone", None, max(worst_value, 0.0), threshold, detail, [low, high],
                    _with_flags(high, flags))


def check_unbounded(cells: Sequence[Cell], unbounded_eps: float, threshold: float) -> CheckResult:
    """PGD with an unbounded budget should leave (almost) no sample robust."""
    pgd = [c for c in cells if c.name == "pgd" and math.isclose(c.eps, unbounded_eps, rel_tol=1e-9)]
    cell = _lowest(pgd)
    if cell is None:
        return _skip("unbounded-not-zero", None, threshold, "needs a PGD cell at the unbounded budget")
    robust = cell.records["correct1"].astype(bool)
    detail = f"{int(robust.sum())} of {len(robust)} samples still robust under {cell.label()}"
    return _verdict("unbounded-not-zero", None, cell.robust(), threshold, detail, [cell], _with_flags(cell, robust))
