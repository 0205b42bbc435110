"""The audit's evidence in the results store: reading the model's attack and probe cells, writing check cells."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.audit.checks import CHECKS, Cell, CheckResult
from robustbench_rpc.results.schema import BASE_COLUMNS, CellSpec
from robustbench_rpc.results.store import ResultsStore, model_identity

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from robustbench_rpc.audit.run import AuditSettings


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def gather_cells(out: str | Path, reference: CellSpec, norm: str, dataset: str) -> tuple[list[Cell], Cell | None]:
    """Return the model's attack cells (pixel threat model, ``norm``) on ``dataset``, and its latest stability probe."""
    store = ResultsStore(Path(out), create=False)
    identity = model_identity(reference)
    cells: list[Cell] = []
    probes: list[Cell] = []
    for spec, records, meta in store.iter_cells():
        if spec.dataset != dataset or not _same(model_identity(spec), identity):
            continue
        if spec.condition == "attack" and spec.params.get("norm") == norm \
                and spec.params.get("threat_model", "pixel") == "pixel":
            cells.append(Cell(spec, records, meta))
        elif spec.condition == "audit" and spec.params.get("probe") == "stability":
            probes.append(Cell(spec, records, meta))
    probe = max(probes, key=lambda c: (str(c.meta.get("written")), len(c.records)), default=None)
    return cells, probe


def check_spec(reference: CellSpec, settings: AuditSettings, result: CheckResult) -> CellSpec:
    """The cell of one check's verdict: the model of the evidence, condition ``audit``, the check's parameters."""
    params: dict[str, Any] = {"check": result.check, "norm": settings.norm, "threshold": result.threshold,
                              "limit": settings.limit}
    if result.eps is not None:
        params["eps"] = float(result.eps)
    return CellSpec(model=reference.model, dataset=reference.dataset, condition="audit", params=params,
                    checkpoint_sha256=reference.checkpoint_sha256, model_options=dict(reference.model_options))


def _evidence_frame(result: CheckResult) -> pd.DataFrame:
    import pandas as pd

    if result.flagged is not None:
        return result.flagged
    if result.evidence:
        frame = result.evidence[0].records.copy()
        frame["flagged"] = False
        return frame
    return pd.DataFrame(columns=[*BASE_COLUMNS, "flagged"])


def verdict_payload(result: CheckResult) -> dict[str, Any]:
    """The verdict as stored with its cell (status, value, threshold, detail, evidence cells)."""
    return {
        "check": result.check,
        "order": list(CHECKS).index(result.check),
        "tests": CHECKS[result.check].tests,
        "status": result.status,
        "value": None if result.value != result.value else float(result.value),
        "threshold": float(result.threshold),
        "unit": CHECKS[result.check].unit,
        "detail": result.detail,
        "evidence": [{"key": c.spec.key(), "slug": c.spec.slug(), "label": c.label()} for c in result.evidence],
    }


def write_check_cells(out: str | Path, reference: CellSpec, settings: AuditSettings,
                      results: list[CheckResult]) -> None:
    """Store every verdict as a cell whose records are the evidence samples (``flagged``)."""
    from robustbench_rpc.results.provenance import package_versions

    store = ResultsStore(Path(out), create=False)
    for result in results:
        runs = sorted({str(c.meta.get("run_id")) for c in result.evidence if c.meta.get("run_id")})
        provenance = {"derived_from_runs": runs, "package_versions": package_versions(), "command_line": sys.argv,
                      "evidence": [c.spec.key() for c in result.evidence]}
        store.write_cell(check_spec(reference, settings, result), _evidence_frame(result), provenance,
                         extra={"audit": verdict_payload(result)})
