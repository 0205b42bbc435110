"""``evaluate`` and ``attack`` take the same data options (``--dataset``/``--suite``, ``--data``, ``--imagenet``)."""

from __future__ import annotations

import pytest
from datagen import make_imagefolder

from robustbench_rpc.cli.app import main
from robustbench_rpc.results.store import ResultsStore

WNIDS = ["n01440764", "n01443537"]
MODEL = ["-m", "symvit_digits_patch8_32", "--num-classes", "1000"]


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    make_imagefolder(root, {w: 2 for w in WNIDS})
    return root


def _cells(path) -> list[tuple[str, str, int]]:
    return sorted((s.dataset, s.condition, len(r)) for s, r, _ in ResultsStore(path).iter_cells())


def test_evaluate_takes_dataset_and_data(capsys, tmp_path, val_root):
    code, err = cli(capsys, "evaluate", *MODEL, "--dataset", "imagenet", "--data", str(val_root), "--out",
                    str(tmp_path / "a"), "-q", "--device", "cpu")
    assert code == 0, err
    assert _cells(tmp_path / "a") == [("imagenet", "clean", 4)]
    code, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "--dataset", "digits", "--limit", "5",
                    "--out", str(tmp_path / "d"), "-q", "--device", "cpu")
    assert code == 0 and _cells(tmp_path / "d") == [("digits", "clean", 5)]


def test_evaluate_data_needs_one_dataset(capsys, tmp_path, val_root):
    code, err = cli(capsys, "evaluate", *MODEL, "--suite", "clean,imagenet-a", "--data", str(val_root), "--out",
                    str(tmp_path / "r"), "-q")
    assert code == 2
    assert "--data gives the folder of one dataset, but --suite clean,imagenet-a needs imagenet, imagenet-a" in err


def test_attack_takes_suite_imagenet_and_data_root(capsys, tmp_path, val_root):
    common = ["--attack", "fgsm", "--eps", "1/255", "-q", "--device", "cpu"]
    code, err = cli(capsys, "attack", *MODEL, "--suite", "clean", "--imagenet", str(val_root), "--out",
                    str(tmp_path / "a"), *common)
    assert code == 0, err
    assert _cells(tmp_path / "a") == [("imagenet", "attack", 4)]
    root = tmp_path / "data"
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "val").symlink_to(val_root, target_is_directory=True)
    code, err = cli(capsys, "attack", *MODEL, "--data-root", str(root), "--out", str(tmp_path / "b"), *common)
    assert code == 0, err
    assert _cells(tmp_path / "b") == [("imagenet", "attack", 4)]
    code, err = cli(capsys, "attack", *MODEL, "--dataset", "digits", "--imagenet", str(val_root), "--out",
                    str(tmp_path / "c"), *common)
    assert code == 2 and "--imagenet does not go with --dataset digits" in err
