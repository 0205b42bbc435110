"""Hand-made per-sample records for the results tests (no model runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from robustbench_rpc.results.schema import CellSpec
from robustbench_rpc.results.store import ResultsStore

SHA_A = "a" * 64
SHA_B = "b" * 64
PROVENANCE = {"device": "cpu", "seed": 0, "versions": {"torch": "test"}}


def classification_records(n: int, n_correct1: int, n_correct5: int | None = None) -> pd.DataFrame:
    """Return ``n`` records of which the first ``n_correct1`` are top-1 correct (``n_correct5`` top-5)."""
    n_correct5 = n if n_correct5 is None else n_correct5
    labels = [i % 7 for i in range(n)]
    correct1 = [i < n_correct1 for i in range(n)]
    correct5 = [i < n_correct5 for i in range(n)]
    preds = [lab if ok else (lab + 1) % 7 for lab, ok in zip(labels, correct1, strict=True)]
    top5 = [[p, (p + 1) % 1000, (p + 2) % 1000, (p + 3) % 1000, (p + 4) % 1000] for p in preds]
    top5 = [t if ok5 else [900, 901, 902, 903, 904] for t, ok5 in zip(top5, correct5, strict=True)]
    return pd.DataFrame(
        {
            "sample_id": [f"n0000000{lab}/img_{i:03d}.JPEG" for i, lab in enumerate(labels)],
            "index": list(range(n)),
            "label": labels,
            "pred": preds,
            "top5": top5,
            "prob_max": [0.5 + 0.4 * ok for ok in correct1],
            "correct1": correct1,
            "correct5": correct5,
        }
    )


def attack_records(n: int, n_clean_correct: int, n_robust: int, eps: float) -> pd.DataFrame:
    """Return attack records: the first ``n_clean_correct`` clean-correct, the first ``n_robust`` still correct."""
    assert n_robust <= n_clean_correct
    frame = classification_records(n, n_robust, n_robust)
    clean_correct = [i < n_clean_correct for i in range(n)]
    frame["clean_pred"] = [lab if ok else lab + 1 for lab, ok in zip(frame["label"], clean_correct, strict=True)]
    frame["clean_correct"] = clean_correct
    frame["success"] = [cc and not c1 for cc, c1 in zip(clean_correct, frame["correct1"], strict=True)]
    frame["norm_linf"] = [eps * (0.5 + 0.5 * (i % 2)) for i in range(n)]
    frame["norm_l2"] = [eps * 100 for _ in range(n)]
    frame["norm_l1"] = [eps * 1000 for _ in range(n)]
    frame["queries"] = [-1] * n
    return frame


def spec(model: str, sha: str | None, dataset: str, condition: str, **params: object) -> CellSpec:
    """Return a cell spec."""
    return CellSpec(model=model, dataset=dataset, condition=condition, params=dict(params), checkpoint_sha256=sha)


#: Corruption cells of the view tests: (corruption, severity) -> top-1 correct out of 10 for models A and B.
CORRUPTION_CORRECT = {
    ("gaussian_noise", 1): (8, 9),
    ("gaussian_noise", 2): (6, 7),
    ("fog", 1): (5, 4),
}
#: Attack cells: eps (x/255) -> (clean correct, robust correct) out of 10 for models A and B.
ATTACK_CORRECT = {1: ((8, 4), (9, 6)), 4: ((8, 1), (9, 3))}
CLEAN_CORRECT = {"A": (9, 10), "B": (10, 10)}  # (top-1, top-5) out of 10


def write_model(root: Path, which: str) -> ResultsStore:
    """Write model ``which`` ('A' or 'B', index 0 / 1 in the tables above) into a new results directory."""
    model, sha, k = ("symvit_tiny", SHA_A, 0) if which == "A" else ("rpc_symvit_tiny", SHA_B, 1)
    store = ResultsStore(root, create=True)
    c1, c5 = CLEAN_CORRECT[which]
    store.write_cell(spec(model, sha, "imagenet", "clean"), classification_records(10, c1, c5), PROVENANCE)
    for (name, severity), correct in CORRUPTION_CORRECT.items():
        cell = spec(model, sha, "imagenet-c", "corruption", name=name, severity=severity)
        store.write_cell(cell, classification_records(10, correct[k]), PROVENANCE)
    for eps255, pairs in ATTACK_CORRECT.items():
        clean, robust = pairs[k]
        cell = spec(model, sha, "imagenet", "attack", name="pgd", norm="Linf", eps=eps255 / 255, steps=10)
        store.write_cell(cell, attack_records(10, clean, robust, eps255 / 255), PROVENANCE)
    return store


def test_model_labels_name_the_default_precision() -> None:
    from robustbench_rpc.results.tidy import model_labels

    fp32 = {"model": "m", "checkpoint_sha256": "ab", "model_options": {}}
    bf16 = {"model": "m", "checkpoint_sha256": "ab", "model_options": {"precision": "bf16"}}
    assert model_labels([fp32, bf16, fp32]) == ["m[precision=fp32]", "m[precision=bf16]", "m[precision=fp32]"]
    other = {"model": "n", "checkpoint_sha256": None, "model_options": {"rpc_iters": 2}}
    assert model_labels([other]) == ["n"]
