"""The human-readable comparison table: a comparison frame (``robustbench_rpc.results.compare``) as people read it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def comparison_display(frame: pd.DataFrame, digits: int = 2, level: float = 0.95) -> pd.DataFrame:
    """Return the human-readable comparison: cell, metric, model, n, both values, difference, interval, p."""
    import pandas as pd

    baseline = str(frame["baseline"].iloc[0]) if len(frame) else "baseline"

    def signed(value: float) -> str:
        return "-" if pd.isna(value) else f"{value:+.{digits}f}"

    return pd.DataFrame(
        {
            "cell": frame["cell"],
            "metric": frame["metric"],
            "model": frame["model"],
            "n": frame["n"],
            f"{baseline} (baseline)": frame["baseline_value"],
            "model value": frame["model_value"],
            "diff (points)": [signed(v) for v in frame["diff"]],
            f"{level * 100:g}% CI": [
                f"[{signed(lo)}, {signed(hi)}]"
                for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)
            ],
            "McNemar p": ["-" if pd.isna(p) else f"{p:.3g}" for p in frame["p_value"]],
        }
    )
