"""The audit's stored verdicts as a frame: one row per check cell (condition ``audit``, params ``check``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.results.store import ResultsStore, model_identity, open_stores

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of the audit frame, in order.
AUDIT_COLUMNS = ("model_label", "dataset", "check", "norm", "eps", "status", "value", "threshold", "unit", "tests",
                 "detail", "evidence", "order", "results_dir")


def audit_frame(sources: ResultsStore | str | Path | Iterable[ResultsStore | str | Path]) -> pd.DataFrame:
    """Return the audit verdicts stored in the results directories (empty when no audit was run)."""
    import pandas as pd

    from robustbench_rpc.results.tidy import model_labels, unique_cells

    stores = open_stores(sources)
    rows: list[dict[str, Any]] = []
    identities = []
    for _, store, cell in unique_cells(stores):
        spec = cell.spec
        if spec.condition != "audit" or "check" not in spec.params:
            continue
        verdict = (cell.meta.get("extra") or {}).get("audit") or {}
        eps = spec.params.get("eps")
        rows.append({
            "dataset": spec.dataset, "check": spec.params["check"], "norm": spec.params.get("norm"),
            "eps": None if eps is None else float(eps), "status": verdict.get("status"),
            "value": verdict.get("value"), "threshold": verdict.get("threshold"), "unit": verdict.get("unit"),
            "tests": verdict.get("tests"), "detail": verdict.get("detail"),
            "evidence": "; ".join(e.get("label") or e.get("slug", "") for e in verdict.get("evidence", [])),
            "order": verdict.get("order", 0), "results_dir": str(store.root),
        })
        identities.append(model_identity(spec))
    frame = pd.DataFrame(rows, columns=[c for c in AUDIT_COLUMNS if c != "model_label"])
    frame.insert(0, "model_label", model_labels(identities) if identities else [])
    frame["value"] = frame["value"].astype(float)
    frame["threshold"] = frame["threshold"].astype(float)
    frame["eps"] = frame["eps"].astype(float)
    return frame
