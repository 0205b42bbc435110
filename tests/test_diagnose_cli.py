"""``robustbench-rpc diagnose`` end to end on the shipped digits model, and its errors as a user sees them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clirun import run_cli

from robustbench_rpc.demo.train import SHIPPED, embedded_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "kpca"
RPC = SHIPPED["rpc_symvit"][0]



@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    """Diagnose the shipped RPC-SymViT on 6 digits (clean and gaussian_noise s5) once for the module."""
    from robustbench_rpc.diagnostics import diagnose

    out = tmp_path_factory.mktemp("diag")
    summary = diagnose(RPC, str(embedded_checkpoint("rpc_symvit")), out=out, limit=6, corruption="gaussian_noise",
                       severity=5)
    return out, summary


def test_records_hold_every_quantity_per_layer_and_head(diagnosed):
    out, summary = diagnosed
    frame = summary.frame
    assert len(summary.written) == 2 and set(frame["input"]) == {"clean", "corrupted"}
    clean = frame[frame["input"] == "clean"]
    pap = clean[clean["quantity"] == "pap_residual"]
    assert sorted(set(pap["iteration"])) == [1, 2, 3, 4] and set(pap["layer"]) == {0}  # PAP in the first block
    assert sorted(set(clean[clean["quantity"] == "value_alignment"]["head"])) == [0, 1, 2, 3]
    assert set(frame["n"]) == {6}
    assert (clean[clean["quantity"] == "value_alignment_chance"]["value"] - 16 / 17).abs().max() < 1e-12
    readout = clean[clean["quantity"] == "value_alignment_readout"]
    assert len(readout) == 4 * 4 and readout["value"].between(0, 1).all()  # 4 layers x 4 heads


def test_layer_error_equals_the_python_api(diagnosed):
    from robustbench_rpc.diagnostics import reconstruction_error
    from robustbench_rpc.engine.plan import digits_source
    from robustbench_rpc.models.wrapper import load_model

    _, summary = diagnosed
    frame = summary.frame
    rows = frame[(frame["input"] == "clean") & (frame["quantity"] == "recon_log_error") & (frame["head"] == -1)]
    model = load_model(RPC, str(embedded_checkpoint("rpc_symvit")))
    expected = reconstruction_error(model, digits_source("test", 6).images)
    assert rows.sort_values("layer")["value"].tolist() == pytest.approx(expected, rel=1e-12)


def test_corrupted_cell_is_the_corrupted_images(diagnosed):
    from robustbench_rpc.corruptions import corrupt
    from robustbench_rpc.diagnostics import reconstruction_error
    from robustbench_rpc.engine.plan import digits_source
    from robustbench_rpc.models.wrapper import load_model

    _, summary = diagnosed
    frame = summary.frame
    rows = frame[(frame["input"] == "corrupted") & (frame["quantity"] == "recon_log_error") & (frame["head"] == -1)]
    assert set(rows["corruption"]) == {"gaussian_noise"} and set(rows["severity"]) == {5}
    images = corrupt(digits_source("test", 6).images, "gaussian_noise", 5, generator=torch.Generator().manual_seed(0))
    model = load_model(RPC, str(embedded_checkpoint("rpc_symvit")))
    assert rows.sort_values("layer")["value"].tolist() == pytest.approx(reconstruction_error(model, images),
                                                                          rel=1e-12)


def test_tidy_table_and_compare_skip_diagnose_cells(diagnosed, tmp_path):
    from robustbench_rpc.api import evaluate
    from robustbench_rpc.errors import UserError
    from robustbench_rpc.reporting.diagnostics import diagnostics_table
    from robustbench_rpc.results.tidy import tidy

    out, summary = diagnosed
    with pytest.raises(UserError, match=r"only audit or diagnose cells"):
        tidy(out)
    evaluate(RPC, str(embedded_checkpoint("rpc_symvit")), out=out, suite="digits", limit=6, progress=False)
    frame = tidy(out)
    assert set(frame["condition"]) == {"clean"} and "top1" in set(frame["metric"])
    table = diagnostics_table(summary.frame)
    assert list(table.columns) == ["model", "layer", "attention", "quantity", "clean", "gaussian_noise s5"]
    row = table[(table["layer"] == 0) & (table["quantity"] == "PAP residual (last)")].iloc[0]
    sel = summary.frame[(summary.frame["quantity"] == "pap_residual") & (summary.frame["iteration"] == 4)
                        & (summary.frame["input"] == "clean")]
    assert row["clean"] == pytest.approx(sel["value"].mean())


def test_report_has_the_diagnostics_section(diagnosed, tmp_path):
    from robustbench_rpc.api import evaluate
    from robustbench_rpc.reports import write_report

    out, _ = diagnosed
    evaluate(RPC, str(embedded_checkpoint("rpc_symvit")), out=out, suite="digits", limit=6, progress=False)
    text = write_report([out], tmp_path / "r.md").read_text()
    section = text.split("## Diagnostics\n")[1].split("\n## ")[0]
    assert f"| {RPC} | 0 | rpc | PAP residual (last) |" in section and "gaussian_noise s5" in section
    assert "(r_plots/diagnostics.png)" in section
    assert (tmp_path / "r_plots" / "diagnostics.png").stat().st_size > 10_000


def test_cli_prints_table_writes_plot_and_resumes(capsys, tmp_path):
    ckpt = str(embedded_checkpoint("rpc_symvit"))
    argv = ["diagnose", "-m", RPC, "-c", ckpt, "--limit", "4", "--corruption", "fog", "--severity", "2",
            "--out", str(tmp_path / "r")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "PAP residual (last)" in out and "fog s2" in out
    assert "2 diagnose cell(s) computed, 0 already finished" in out
    assert (tmp_path / "r" / "plots" / "diagnostics.png").stat().st_size > 10_000
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "0 diagnose cell(s) computed, 2 already finished" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-m", "resnet18", "--num-classes", "10"],
         "Model resnet18 has no attention modules the diagnostics can read"),
        (["-m", "scaled_vit_tiny_patch16_224", "-c", str(FIXTURES / "scaled_attention" / "scaled_s_checkpoint.pth"),
          "--model-arg", "num_heads=3", "--model-arg", "img_size=64"],
         "trained on 17 tokens but the model was built for 65"),
        (["-m", "symvit_digits_patch8_32", "-c", str(FIXTURES / "kpca_recon" / "recon_vit_checkpoint.pth")],
         "looks like a vit checkpoint"),
        (["-m", "kpca_vit_tiny_patch16_224", "-c", str(FIXTURES / "kpca_recon" / "recon_vit_checkpoint.pth"),
          "--model-arg", "num_heads=3", "--ema"], "has no EMA weights"),
        (["-m", RPC, "--corruption", "smoke"], "Unknown corruption 'smoke'"),
        (["-m", RPC, "--dataset", "imagenet"], "--dataset imagenet needs --data"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(capsys, tmp_path, argv, message):
    out = tmp_path / "never"
    code, _, err = run_cli(capsys, "diagnose", *argv, "--out", str(out))
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]  # one sentence (a warning about random weights may precede)
    assert not out.exists()  # nothing half-written, not even an empty results directory
