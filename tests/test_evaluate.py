"""The evaluation engine end to end: records equal a direct forward pass, resume, refusal to mix, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datagen import make_imagefolder, make_imagenet_c

import robustbench_rpc
from robustbench_rpc.api import evaluate
from robustbench_rpc.cli.app import main
from robustbench_rpc.data import build_dataset
from robustbench_rpc.data.classes import wnid_to_index
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy

WNIDS = ["n01440764", "n01443537", "n01484850"]
MODEL = "symvit_digits_patch8_32"
OPTIONS = {"num_classes": 1000}
SYMVIT_DIGITS = Path(robustbench_rpc.__file__).parent / "assets" / "checkpoints" / "symvit_digits.safetensors"


@pytest.fixture(scope="module")
def val_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("val")
    make_imagefolder(root, {w: 3 for w in WNIDS},
                     kinds={f"{WNIDS[0]}/img_1.JPEG": "gray", f"{WNIDS[1]}/img_0.JPEG": "cmyk",
                            f"{WNIDS[2]}/img_2.JPEG": "corrupt"})
    return root


def run(val_root: Path, out: Path, **kw) -> robustbench_rpc.api.RunSummary:
    args = {"out": out, "suite": "clean", "paths": {"imagenet": str(val_root)}, "model_options": OPTIONS,
            "batch_size": 4, "progress": False, "device": "cpu"}
    args.update(kw)
    return evaluate(MODEL, **args)


def test_records_equal_a_direct_forward_pass(val_root, tmp_path):
    summary = run(val_root, tmp_path / "r")
    assert len(summary.written) == 1 and not summary.skipped
    store = ResultsStore(tmp_path / "r")
    records, meta = store.read_cell(summary.written[0])
    # 8 readable images; the truncated JPEG is skipped and counted, gray and CMYK are converted and counted
    assert len(records) == 8
    report = meta["extra"]["load_report"]
    assert report["skipped"] == 1 and report["converted"] == {"CMYK": 1, "L": 1}
    torch.manual_seed(0)
    model = robustbench_rpc.load_model(MODEL, **OPTIONS)
    ds = build_dataset("imagenet", val_root, model.preprocessing)
    labels = wnid_to_index()
    expected_labels = []
    with torch.no_grad():
        logits = []
        for i in range(len(ds)):
            sample = ds[i]
            if sample.image is None:
                continue
            expected_labels.append(sample.label)
            logits.append(model(sample.image.unsqueeze(0)))
    logits = torch.cat(logits)
    assert records["label"].tolist() == expected_labels
    assert set(expected_labels) == {labels[w] for w in WNIDS}
    assert records["pred"].tolist() == logits.argmax(1).tolist()
    assert records["prob_max"].to_numpy() == pytest.approx(logits.softmax(1).amax(1).numpy(), abs=1e-6)
    assert records["top5"].tolist() == logits.topk(5, dim=1).indices.tolist()
    assert summary.table.query("metric == 'top1'")["value"].iloc[0] == pytest.approx(
        100 * (records["pred"] == records["label"]).mean())


def test_resume_force_and_mixing(val_root, tmp_path):
    out = tmp_path / "r"
    first = run(val_root, out)
    again = run(val_root, out)
    assert not again.written and len(again.skipped) == 1
    forced = run(val_root, out, force=True)
    assert len(forced.written) == 1
    with pytest.raises(UserError, match="holds results of model .* pass --allow-mixed"):
        run(val_root, out, model_options={"num_classes": 1000, "embed_dim": 32})
    assert len(list((out / "cells").glob("*.parquet"))) == 1
    limited = run(val_root, out, limit=4)  # another sample selection is another cell
    assert len(limited.written) == 1 and limited.written[0].key() != first.written[0].key()


def test_released_imagenet_c_and_missing_cells(val_root, tmp_path):
    root = tmp_path / "c"
    make_imagenet_c(root, ["fog", "snow"], [1, 2], {WNIDS[0]: ["a.JPEG", "b.JPEG"], WNIDS[1]: ["c.JPEG"]})
    summary = run(val_root, tmp_path / "r", suite="imagenet-c", paths={"imagenet-c": str(root)},
                  corruptions="fog,snow", severities="1,2")
    assert sorted((s.params["name"], s.params["severity"]) for s in summary.written) == [
        ("fog", 1), ("fog", 2), ("snow", 1), ("snow", 2)]
    with pytest.raises(UserError, match="frost"):
        run(val_root, tmp_path / "r2", suite="imagenet-c", paths={"imagenet-c": str(root)},
            corruptions="fog,frost", severities="1")
    assert not (tmp_path / "r2").exists()


def test_generated_corruptions_are_seeded(tmp_path):
    kw = {"suite": "digits-c", "corruptions": "gaussian_noise,contrast", "severities": "3", "limit": 24,
          "checkpoint": SYMVIT_DIGITS}
    a = evaluate(MODEL, out=tmp_path / "a", progress=False, device="cpu", seed=1, **kw)
    b = evaluate(MODEL, out=tmp_path / "b", progress=False, device="cpu", seed=1, **kw)
    c = evaluate(MODEL, out=tmp_path / "c", progress=False, device="cpu", seed=2, **kw)
    read = {k: ResultsStore(tmp_path / k) for k in "abc"}
    for spec_a, spec_b, spec_c in zip(a.written, b.written, c.written, strict=True):
        ra, _ = read["a"].read_cell(spec_a)
        rb, _ = read["b"].read_cell(spec_b)
        rc, _ = read["c"].read_cell(spec_c)
        assert ra["prob_max"].tolist() == rb["prob_max"].tolist()
        if spec_a.params["name"] == "gaussian_noise":
            assert ra["prob_max"].tolist() != rc["prob_max"].tolist()
        else:  # contrast is deterministic
            assert ra["prob_max"].tolist() == rc["prob_max"].tolist()
    summary = tidy([tmp_path / "a"])
    summary = summary[summary["condition"] == "imagenet-c-summary"]
    # AlexNet-normalized mCE is for ImageNet-C only; the digits get their mean corrupted accuracy
    assert set(summary["metric"]) == {"mean_top1", "mean_top1_all", "mean_error"}


def test_device_corruption_rng_is_labelled_with_the_gpu_and_refused_on_the_cpu(tmp_path, monkeypatch):
    import robustbench_rpc.api as api
    from robustbench_rpc.engine.plan import generated_params

    assert api.device_rng_label("cpu", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    label = api.device_rng_label("device", torch.device("cuda", 0))
    assert label == "cuda:NVIDIA H200"
    assert generated_params(1, 64, False, label)["rng"] == label and "rng" not in generated_params(1, 64, False, None)
    with pytest.raises(UserError, match="--corruption-rng device draws on the run's GPU, but this run is on cpu"):
        evaluate(MODEL, out=tmp_path / "r", suite="digits-c", corruptions="fog", severities="3", limit=8,
                 checkpoint=SYMVIT_DIGITS, progress=False, device="cpu", corruption_rng="device")
    assert not (tmp_path / "r").exists()


def test_ood_cell_has_aupr(val_root, tmp_path):
    imagenet_o = sorted({w.strip() for w in (Path(robustbench_rpc.__file__).parent / "assets" / "imagenet" /
                                             "imagenet_o_wnids.txt").read_text().split()})
    o_root = tmp_path / "o"
    make_imagefolder(o_root, {w: 2 for w in imagenet_o[3:5]})
    in_dist = tmp_path / "val_o"
    make_imagefolder(in_dist, {w: 2 for w in imagenet_o[:3]})
    summary = run(in_dist, tmp_path / "r", suite="imagenet-o", paths={"imagenet": str(in_dist),
                                                                      "imagenet-o": str(o_root)})
    metrics = summary.table.set_index("metric")["value"]
    assert 0 <= metrics["aupr"] <= 100 and "auroc" in metrics


def cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--suite", "clen"], "Unknown suite entry 'clen'"),
        (["--suite", "clean"], "The imagenet data is needed; pass --imagenet PATH or --data-root DIR."),
        (["--suite", "clean", "--imagenet", "/no/such/dir"], "imagenet path /no/such/dir does not exist"),
        (["--suite", "digits", "--limit", "0"], "--limit must be >= 1"),
        (["--suite", "digits", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--suite", "digits", "--amp", "fp8"], "Unknown precision 'fp8'"),
        (["--suite", "digits", "--device", "cuda:7"], "cuda"),
        (["--suite", "digits", "--device", "cpu", "--decode", "gpu"], "--decode gpu decodes JPEGs with nvjpeg on a "
                                                                       "CUDA device, but this run is on cpu"),
        (["--suite", "digits", "--decode", "jpeg"], "Unknown --decode 'jpeg'; expected cpu"),
        (["--suite", "digits-c", "--corruption-rng", "gpu"], "Unknown --corruption-rng 'gpu'; expected cpu"),
    ],
)
def test_evaluate_cli_bad_input(capsys, tmp_path, args, message):
    code, err = cli(capsys, "evaluate", "-m", MODEL, "--out", str(tmp_path / "r"), "-q", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_evaluate_cli_digits(capsys, tmp_path):
    code, _ = cli(capsys, "evaluate", "-m", "rpc_symvit_digits_patch8_32", "--checkpoint",
                  str(Path(robustbench_rpc.__file__).parent / "assets/checkpoints/rpc_symvit_digits.safetensors"),
                  "--suite", "digits", "--out", str(tmp_path / "r"), "-q")
    assert code == 0
    store = ResultsStore(tmp_path / "r")
    [(spec, records, meta)] = list(store.iter_cells())
    assert spec.checkpoint_sha256 and meta["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0] \
        or meta["provenance"]["versions"]["torch"] == torch.__version__
    assert len(records) == 450


SHARED_VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-val-100"


@pytest.mark.skipif(not SHARED_VAL.is_dir(), reason="../shared/data/imagenet-val-100 is not available")
def test_real_imagenet_images_clean_and_generated_c(tmp_path):
    """Real validation JPEGs: labels from the canonical synset order, generated ImageNet-C from one decode."""
    summary = evaluate("symvit_tiny_patch16_224", out=tmp_path / "r", suite="clean,imagenet-c",
                       paths={"imagenet": str(SHARED_VAL), "imagenet-c": "generated"}, corruptions="fog,pixelate",
                       severities="2", limit=6, batch_size=3, progress=False, device="cpu")
    store = ResultsStore(tmp_path / "r")
    cells = {s.condition + ":" + str(s.params.get("name")): r for s, r, _ in store.iter_cells()}
    assert sorted(cells) == ["clean:None", "corruption:fog", "corruption:pixelate"]
    index = wnid_to_index()
    for records in cells.values():
        assert len(records) == 6
        wnids = [sid.split("/")[0] for sid in records["sample_id"]]
        assert records["label"].tolist() == [index[w] for w in wnids]
    assert len(summary.written) == 3


def test_data_root_finds_the_usual_folders(val_root, tmp_path):
    root = tmp_path / "data"
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "val").symlink_to(val_root, target_is_directory=True)
    summary = evaluate(MODEL, out=tmp_path / "r", suite="clean", data_root=root, model_options=OPTIONS,
                       progress=False, device="cpu")
    assert summary.written[0].dataset == "imagenet"
    with pytest.raises(UserError, match=r"No imagenet-r data under --data-root .*pass --imagenet-r PATH"):
        evaluate(MODEL, out=tmp_path / "r2", suite="imagenet-r", data_root=root, model_options=OPTIONS,
                 progress=False, device="cpu")


def test_identity_of_ready_modules_and_data(val_root, tmp_path):
    torch.manual_seed(0)
    first = robustbench_rpc.load_model(MODEL, **OPTIONS)
    torch.manual_seed(1)
    second = robustbench_rpc.load_model(MODEL, **OPTIONS)
    kw = {"suite": "clean", "paths": {"imagenet": str(val_root)}, "progress": False, "device": "cpu"}
    evaluate(first, out=tmp_path / "r", **kw)
    with pytest.raises(UserError, match="holds results of model"):  # other weights, same class: not reused
        evaluate(second, out=tmp_path / "r", **kw)
    other = tmp_path / "other"
    make_imagefolder(other, {w: 2 for w in WNIDS})  # another listing (the fingerprint hashes paths, not pixels)
    with pytest.raises(UserError, match="computed on other imagenet data"):
        evaluate(first, out=tmp_path / "r", **{**kw, "paths": {"imagenet": str(other)}})


def test_model_outputs_must_fit_the_dataset(val_root, tmp_path):
    with pytest.raises(UserError, match="The model has 10 outputs but imagenet has 1000 classes"):
        evaluate(MODEL, checkpoint=SYMVIT_DIGITS, out=tmp_path / "r", suite="clean",
                 paths={"imagenet": str(val_root)}, progress=False, device="cpu")
    assert not (tmp_path / "r").exists()
