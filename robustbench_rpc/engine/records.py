"""Per-sample records from logits (the schema of :mod:`robustbench_rpc.results.schema`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch import Tensor


def records_from_logits(
    logits: Tensor,
    labels: Tensor,
    sample_ids: Sequence[str],
    indices: Sequence[int] | Tensor,
    is_ood: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Turn a batch of (already masked) logits into records: predictions, top-5, max probability, correctness.

    With ``is_ood`` the records also get ``is_ood`` and ``ood_score`` (negative max softmax probability).
    """
    logits = logits.detach().float().cpu()
    labels = labels.detach().cpu().long()
    probs = logits.softmax(dim=1)
    k = min(5, logits.shape[1])
    top5 = logits.topk(k, dim=1).indices
    prob_max = probs.amax(dim=1)
    pred = top5[:, 0]
    correct1 = pred == labels
    correct5 = (top5 == labels.unsqueeze(1)).any(dim=1)
    idx = indices.tolist() if isinstance(indices, Tensor) else list(indices)
    top5_list = top5.tolist()
    rows = []
    for i in range(len(labels)):
        row = {
            "sample_id": str(sample_ids[i]),
            "index": int(idx[i]),
            "label": int(labels[i]),
            "pred": int(pred[i]),
            "top5": top5_list[i],
            "prob_max": float(prob_max[i]),
            "correct1": bool(correct1[i]),
            "correct5": bool(correct5[i]),
        }
        if is_ood is not None:
            row["is_ood"] = bool(is_ood[i])
            row["ood_score"] = -float(prob_max[i])
        rows.append(row)
    return rows


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Return the records as a DataFrame in dataset order, with compact dtypes."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values("index", kind="stable").reset_index(drop=True)
    for col in ("index", "label", "pred", "clean_pred", "queries"):
        if col in frame:
            frame[col] = frame[col].astype("int64")
    return frame

