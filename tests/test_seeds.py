"""``--seeds``: one cell per seed for stochastic attacks, each equal to the single-seed run of that seed."""

from __future__ import annotations

import pytest
from test_attack_cli import MODEL, cli

from robustbench_rpc.engine.attack_plan import check_seeds
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.store import ResultsStore

ARGS = ["--dataset", "digits", "--attack", "pgd,fgsm", "--eps", "4/255", "--limit", "6", "--option",
        "pgd.steps=2", "-q"]


def cells(out):
    return {(s.params["name"], s.params.get("seed")): r for s, r, _ in ResultsStore(out).iter_cells()}


def test_seeds_are_cell_coordinates_and_match_single_seed_runs(tmp_path, capsys):
    code, _, err = cli(capsys, "attack", *MODEL, *ARGS, "--seeds", "0,2", "--out", str(tmp_path / "multi"))
    assert code == 0, err
    multi = cells(tmp_path / "multi")
    assert sorted(multi, key=str) == sorted([("fgsm", None), ("pgd", 0), ("pgd", 2)], key=str)
    code, _, err = cli(capsys, "attack", *MODEL, *ARGS, "--seed", "2", "--out", str(tmp_path / "single"))
    assert code == 0, err
    single = cells(tmp_path / "single")
    assert set(single) == {("fgsm", None), ("pgd", 2)}
    assert single[("pgd", 2)].equals(multi[("pgd", 2)])
    assert not multi[("pgd", 0)]["norm_l2"].equals(multi[("pgd", 2)]["norm_l2"])  # other random starts


def test_check_seeds():
    assert check_seeds("0,1,2,3") == [0, 1, 2, 3]
    assert check_seeds("0-3,3") == [0, 1, 2, 3]
    assert check_seeds([4, 1]) == [4, 1]
    with pytest.raises(UserError, match="--seeds must be integers >= 0 such as 0,1,2,3 or 0-3, got 'a'"):
        check_seeds("0,a")
    with pytest.raises(UserError, match="got -1"):
        check_seeds([-1])
