"""The per-sample worst case over attacks: a property over stored records, and its rows in views and compare."""

from __future__ import annotations

import numpy as np
import pytest
from test_results_helpers import PROVENANCE, SHA_A, SHA_B, attack_records, spec

from robustbench_rpc.reporting.views import attacks_view, paper_view
from robustbench_rpc.results.compare import compare
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy

EPS = 4 / 255


def _attack(name: str, **options: object) -> dict:
    return {"name": name, "norm": "Linf", "eps": EPS, "options": dict(options), "threat_model": "pixel"}


def _records(correct: np.ndarray, ids: list[str] | None = None):
    n = len(correct)
    frame = attack_records(n, n, 0, EPS)
    frame["correct1"] = correct
    frame["correct5"] = correct
    frame["success"] = ~correct
    if ids is not None:
        frame["sample_id"] = ids
    return frame


@pytest.mark.parametrize("seed", range(20))
def test_worst_case_is_never_above_any_attack(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    store = ResultsStore(tmp_path / "r", create=True)
    attacks = [("pgd", {}), ("fgsm", {}), ("square", {"queries": 100}), ("pgd", {"steps": 40})]
    ids = [f"s{i}" for i in range(n)]
    same_samples = seed % 2 == 0
    flags = []
    for name, options in attacks[: int(rng.integers(2, 5))]:
        correct = rng.random(n) < rng.random()
        if same_samples:
            members = ids
        else:  # a random subset of at least 3 samples
            members = sorted(rng.choice(ids, size=int(rng.integers(3, n + 1)), replace=False).tolist())
            correct = correct[: len(members)]
        store.write_cell(spec("m", SHA_A, "imagenet", "attack", **_attack(name, **options)),
                         _records(correct, members), PROVENANCE)
        flags.append(dict(zip(members, correct.tolist(), strict=True)))
    frame = tidy(store)
    rows = frame[(frame["metric"] == "robust_top1") & (frame["condition"] == "attack")]
    worst = rows[rows["name"] == "worst-case"]
    common = set.intersection(*(set(f) for f in flags))
    if not common:  # no sample every attack ran on: no worst case to state
        assert worst.empty
        return
    assert len(worst) == 1
    expected = 100.0 * np.mean([all(f[s] for f in flags) for s in common])
    assert worst["value"].iloc[0] == pytest.approx(expected)
    assert int(worst["n"].iloc[0]) == len(common)
    for f in flags:  # never above any attack on the samples they share, nor above any attack's own number
        assert worst["value"].iloc[0] <= 100.0 * np.mean([f[s] for s in common]) + 1e-9
    if same_samples:
        assert worst["value"].iloc[0] <= rows[rows["name"] != "worst-case"]["value"].min() + 1e-9


def _two_models(tmp_path):
    store = ResultsStore(tmp_path / "r", create=True, allow_mixed=True)
    a = np.array([True, True, True, False, True, False])  # pgd, model A
    b = np.array([True, False, True, True, True, False])  # fgsm, model A
    for model, sha in (("A", SHA_A), ("B", SHA_B)):
        fgsm = b if model == "A" else np.ones(6, dtype=bool)  # FGSM breaks nothing of B
        store.write_cell(spec(model, sha, "imagenet", "attack", **_attack("pgd")), _records(a), PROVENANCE)
        store.write_cell(spec(model, sha, "imagenet", "attack", **_attack("fgsm")), _records(fgsm), PROVENANCE)
    # a third attack for A only: not part of the comparison's worst case
    store.write_cell(spec("A", SHA_A, "imagenet", "attack", **_attack("square", queries=50)),
                     _records(np.zeros(6, dtype=bool)), PROVENANCE)
    return store


def test_views_and_compare_show_the_worst_case(tmp_path):
    store = _two_models(tmp_path)
    frame = tidy(store)
    view = attacks_view(frame)
    labels = view["attack"].tolist()
    assert "worst-case of fgsm, pgd, square" in labels and "worst-case of fgsm, pgd" in labels
    by_attack = view.set_index("attack")
    assert by_attack.loc["worst-case of fgsm, pgd, square", "A"] == 0.0  # square broke everything
    assert by_attack.loc["worst-case of fgsm, pgd", "B"] == pytest.approx(100 * 4 / 6)
    paper = paper_view(frame)
    assert paper.set_index("model").loc["A", "worst-case robust top-1 Linf 4/255"] == 0.0  # over its 3 attacks
    assert paper.set_index("model").loc["B", "worst-case robust top-1 Linf 4/255"] == pytest.approx(100 * 4 / 6)
    comparison = compare(store, baseline="A")
    worst = comparison[comparison["name"] == "worst-case"]
    assert len(worst) == 1  # over the two attacks both models ran
    row = worst.iloc[0]
    assert row["baseline_value"] == pytest.approx(100 * 3 / 6)  # A: pgd & fgsm correct on s0, s2, s4
    assert row["model_value"] == pytest.approx(100 * 4 / 6)  # B: FGSM broke nothing, PGD broke s3, s5
    assert "fgsm" in row["variant"] and "square" not in row["variant"]


def test_a_single_attack_has_no_worst_case(tmp_path):
    store = ResultsStore(tmp_path / "r", create=True)
    store.write_cell(spec("m", SHA_A, "imagenet", "attack", **_attack("pgd")), _records(np.ones(4, dtype=bool)),
                     PROVENANCE)
    frame = tidy(store)
    assert "worst-case" not in set(frame["name"].dropna())
    assert not any(c.startswith("worst-case") for c in paper_view(frame).columns)
