"""``robustbench-rpc demo``: SymViT vs RPC-SymViT vs RPC at inference, on real digits, clean / corrupted / attacked.

Everything is embedded: scikit-learn's digits and the two shipped checkpoints. One results directory per model under
``out``; then the tables, the comparison, the plots and a Markdown report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_rpc.demo.train import SHIPPED, embedded_checkpoint


@dataclass(frozen=True)
class DemoVariant:
    """One model of the demo: its label in the results, architecture and shipped checkpoint."""

    label: str
    architecture: str
    checkpoint_kind: str
    description: str


VARIANTS = (
    DemoVariant("symvit", SHIPPED["symvit"][0], "symvit", "SymViT trained on digits (symmetric attention)"),
    DemoVariant("rpc-symvit", SHIPPED["rpc_symvit"][0], "rpc_symvit",
                "RPC-SymViT trained with PAP (n=4, lambda 4, first block)"),
    DemoVariant("symvit+rpc-inference", SHIPPED["rpc_symvit"][0], "symvit",
                "the SymViT checkpoint with PAP switched on at inference only"),
)


@dataclass(frozen=True)
class DemoSettings:
    """How much the demo evaluates: sample counts, corruptions, severities and the attack grid."""

    limit: int | None = None  # digits test images for clean / corruptions (None: all 450)
    corruptions: str = "standard"
    severities: str = "1-5"
    sweep_attacks: str = "pgd,fgsm"
    sweep_eps: str = "1/255:6/255"
    sweep_limit: int | None = 200
    # (attack, eps, options, number of test images): the costly attacks run on a subset
    subset_attacks: tuple[tuple[str, str, dict[str, Any], int], ...] = (
        ("spsa", "4/255", {"samples": 32}, 64),
        ("square", "4/255", {"queries": 300}, 64),
        ("autoattack", "4/255", {}, 32),  # the audit's quick mode attacks the same 32
    )
    audit_eps: str | None = "4/255"  # the audit's budgets (None: no audit)
    audit_limit: int | None = 64
    # the attention diagnostics (robustbench-rpc diagnose): images, and the corruption shown beside clean
    diagnose_limit: int | None = 64
    diagnose_corruption: tuple[str, int] = ("gaussian_noise", 3)
    threads: int = 1

    @classmethod
    def quick(cls) -> DemoSettings:
        """A reduced setting for CI and smoke tests (about a minute on 2 cores)."""
        return cls(limit=48, corruptions="gaussian_noise,glass_blur,fog", severities="1,5", sweep_eps="2/255,6/255",
                   sweep_limit=32, subset_attacks=(("spsa", "4/255", {"samples": 8, "steps": 3}, 8),
                                                   ("square", "4/255", {"queries": 50}, 8)), audit_limit=16,
                   diagnose_limit=16)


@dataclass
class DemoResult:
    """Where the demo wrote its results, tables, plots and report."""

    out: Path
    model_dirs: list[Path] = field(default_factory=list)
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)
    audits: list[Any] = field(default_factory=list)  # robustbench_rpc.audit.AuditSummary per model


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Evaluate the three demo models and write results, tables, plots and report under ``out``."""
    import torch

    settings = settings or DemoSettings()
    out = Path(out)
    result = DemoResult(out)
    common = {"seed": seed, "device": device, "progress": progress, "batch_size": 150}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)  # the tiny models run faster on one thread (op overhead dominates)
    try:
        _run_variants(out, settings, common, result, log)
    finally:
        torch.set_num_threads(previous_threads)
    result.tables = demo_tables(result.model_dirs)
    return result


def _run_variants(out: Path, settings: DemoSettings, common: dict[str, Any], result: DemoResult,
                  log: Callable[[str], None]) -> None:
    from robustbench_rpc.api import attack, evaluate

    for variant in VARIANTS:
        model_dir = out / variant.label
        result.model_dirs.append(model_dir)
        checkpoint = embedded_checkpoint(variant.checkpoint_kind)
        log(f"[{variant.label}] {variant.description}")
        model = {"model": variant.architecture, "checkpoint": checkpoint, "model_name": variant.label}
        evaluate(**model, out=model_dir, suite="digits,digits-c", limit=settings.limit,
                 corruptions=settings.corruptions, severities=settings.severities, **common)
        if settings.diagnose_limit:
            from robustbench_rpc.diagnostics import diagnose

            corruption, severity = settings.diagnose_corruption
            diagnose(variant.architecture, checkpoint, model_name=variant.label, out=model_dir,
                     limit=settings.diagnose_limit, corruption=corruption, severity=severity, seed=common["seed"])
        attack(**model, out=model_dir, attacks=settings.sweep_attacks, eps=settings.sweep_eps, dataset="digits",
               limit=settings.sweep_limit, **common)
        for name, eps, options, limit in settings.subset_attacks:
            attack(**model, out=model_dir, attacks=name, eps=eps, attack_options=options, dataset="digits",
                   limit=limit, **common)
        if settings.audit_eps:
            from robustbench_rpc.audit import audit

            log(f"[{variant.label}] audit at {settings.audit_eps}")
            result.audits.append(audit(**model, out=model_dir, eps=settings.audit_eps, dataset="digits",
                                       quick=True, limit=settings.audit_limit, **common))


def demo_tables(model_dirs: list[Path]) -> dict[str, Any]:
    """Return the demo's tables: clean and corrupted accuracy with an mCE relative to SymViT, the attacks, the
    audit and the attention diagnostics."""
    import pandas as pd

    from robustbench_rpc.reporting.views import build_view
    from robustbench_rpc.results.tidy import tidy

    frame = tidy(model_dirs)
    tables: dict[str, Any] = {"tidy": frame}
    tables["corruptions"] = build_view(frame, "corruptions")
    tables["severity"] = build_view(frame, "severity")
    tables["attacks"] = build_view(frame, "attacks")
    from robustbench_rpc.reporting.views import audit_view
    from robustbench_rpc.results.verdicts import audit_frame

    verdicts = audit_frame(model_dirs)
    if not verdicts.empty:
        tables["audit"] = audit_view(verdicts)
    from robustbench_rpc.diagnostics import diagnostics_frame
    from robustbench_rpc.reporting.diagnostics import diagnostics_table

    diagnosed = diagnostics_frame(model_dirs)
    if not diagnosed.empty:
        tables["diagnostics"] = diagnostics_table(diagnosed)
    tables["summary"] = pd.DataFrame(relative_corruption_summary(frame)).set_index("model")
    return tables


def relative_corruption_summary(frame: Any, baseline: str = "symvit") -> list[dict[str, Any]]:
    """Per model: clean top-1, mean corrupted top-1 and an mCE normalized by the SymViT baseline (SymViT = 100).

    AlexNet's ImageNet-C errors do not apply to digits, so the CE of each corruption is the model's summed error
    over severities divided by the baseline's, as ImageNet-C's mCE does with AlexNet.
    """
    from robustbench_rpc.metrics.corruption import AlexNetErrors, error_table, mce

    def errors(model: str) -> dict[str, dict[int, float]]:
        rows = frame[(frame["model_label"] == model) & (frame["condition"] == "corruption")
                     & (frame["metric"] == "top1")]
        return error_table({(r.name, int(r.severity)): 1 - r.value / 100 for r in rows.itertuples()})

    models = list(dict.fromkeys(frame["model_label"]))
    base = errors(baseline)
    reference = AlexNetErrors(per_severity=base, clean_error=float("nan"), source=f"{baseline} on digits")
    out = []
    for model in models:
        clean = frame[(frame["model_label"] == model) & (frame["condition"] == "clean") & (frame["metric"] == "top1")]
        corr = frame[(frame["model_label"] == model) & (frame["condition"] == "corruption")
                     & (frame["metric"] == "top1")]
        table = errors(model)
        out.append({
            "model": model,
            "clean top-1 (%)": float(clean["value"].iloc[0]) if len(clean) else float("nan"),
            "corrupted top-1 (%)": float(corr["value"].mean()) if len(corr) else float("nan"),
            f"mCE vs {baseline} (%)": 100 * mce(table, alexnet=reference, corruptions=list(base),
                                                allow_partial=True) if table else float("nan"),
        })
    return out
