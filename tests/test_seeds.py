"""``--seeds``: one cell per seed for stochastic attacks and generated corruptions, each equal to the single-seed
run of that seed; the views show mean ± std over the seeds."""

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


EVALUATE = ["--suite", "digits,digits-c", "--corruptions", "gaussian_noise,fog", "--severities", "1,5",
            "--limit", "24", "--batch-size", "8", "-q"]


def corruption_cells(out):
    return {(s.params.get("name"), s.params.get("severity"), s.params.get("seed")): r
            for s, r, _ in ResultsStore(out).iter_cells()}


def test_generated_corruptions_per_seed_equal_single_seed_runs_and_views_show_mean_std(tmp_path, capsys):
    from robustbench_rpc.reporting.views import build_view
    from robustbench_rpc.results.tidy import tidy

    code, _, err = cli(capsys, "evaluate", *MODEL, *EVALUATE, "--seeds", "0,3", "--out", str(tmp_path / "multi"))
    assert code == 0, err
    multi = corruption_cells(tmp_path / "multi")
    assert len(multi) == 1 + 2 * 2 * 2 and (None, None, None) in multi  # clean once, corruptions per seed
    per_seed = {}
    for seed in (0, 3):
        code, _, err = cli(capsys, "evaluate", *MODEL, *EVALUATE, "--seed", str(seed), "--out",
                           str(tmp_path / f"s{seed}"))
        assert code == 0, err
        single = corruption_cells(tmp_path / f"s{seed}")
        for key, records in single.items():
            assert records.equals(multi[key]), key  # the seed's cell is the --seed run's, bit for bit
        per_seed[seed] = single
    assert not multi[("gaussian_noise", 5, 0)]["pred"].equals(multi[("gaussian_noise", 5, 3)]["pred"])
    # the views: mean ± std (sample std) over the two seeds, from each seed's own mean
    frame = tidy(tmp_path / "multi")
    top1 = {seed: {k: 100 * r["correct1"].mean() for k, r in cells.items()} for seed, cells in per_seed.items()}
    noise = [(top1[s][("gaussian_noise", 1, s)] + top1[s][("gaussian_noise", 5, s)]) / 2 for s in (0, 3)]
    mean, std = sum(noise) / 2, abs(noise[0] - noise[1]) / 2 ** 0.5
    corruptions = build_view(frame, "corruptions").set_index("corruption")
    assert corruptions.iloc[:, 0]["gaussian_noise"] == f"{mean:.2f} ± {std:.2f}"
    overall = [sum(v for k, v in top1[s].items() if k[0]) / 4 for s in (0, 3)]
    paper = build_view(frame, "paper")
    expected = f"{sum(overall) / 2:.2f} ± {abs(overall[0] - overall[1]) / 2 ** 0.5:.2f}"
    assert paper["corrupted acc"].tolist() == [expected]
    assert build_view(frame, "severity").iloc[:, -1].map(lambda v: "±" in v).all()


def test_check_seeds():
    assert check_seeds("0,1,2,3") == [0, 1, 2, 3]
    assert check_seeds("0-3,3") == [0, 1, 2, 3]
    assert check_seeds([4, 1]) == [4, 1]
    with pytest.raises(UserError, match="--seeds must be integers >= 0 such as 0,1,2,3 or 0-3, got 'a'"):
        check_seeds("0,a")
    with pytest.raises(UserError, match="got -1"):
        check_seeds([-1])
