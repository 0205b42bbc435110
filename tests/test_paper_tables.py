"""The paper layout: row labels from model options, the attack table at the highest budget, seeds, threat models."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from robustbench_rpc.reporting.exports import export
from robustbench_rpc.reporting.paper import paper_label, threat_model_notes
from robustbench_rpc.reporting.views import build_view


@pytest.mark.parametrize(("model", "options", "label"), [
    ("symvit_tiny_patch16_224", {}, "SymViT"),
    ("rpc_symvit_tiny_patch16_224", {}, "RPC-SymViT (4 iter/layer 1)"),
    ("rpc_symvit_tiny_patch16_224", {"rpc_iters": 2, "rpc_layers": "all"}, "RPC-SymViT (2 iter/all layers)"),
    ("symvit_small_patch16_224", {"rpc_iters": 6}, "RPC-SymViT (6 iter/layer 1)"),
    ("rpc_fan_tiny_12_p16_224", {"rpc_layers": "0,3"}, "RPC-FAN (4 iter/layers 1,4)"),
    ("my-label", {"architecture": "rpc_symvit_tiny_patch16_224", "rpc_layers": "-1"},
     "RPC-SymViT (4 iter/all layers)"),
    ("deit_tiny_patch16_224", {}, None),
])
def test_paper_label(model, options, label):
    assert paper_label(model, options) == label


def row(model, options, name, eps, value, norm="Linf", **variant):
    return {"model": model, "model_label": model, "model_options": json.dumps(options), "dataset": "imagenet",
            "condition": "attack", "name": name, "norm": norm, "eps": eps,
            "variant": json.dumps(variant, sort_keys=True), "metric": "robust_top1", "value": value}


@pytest.fixture
def frame():
    a, b = "symvit_tiny_patch16_224", "rpc_symvit_tiny_patch16_224"
    rows = []
    for model, base in ((a, 10.0), (b, 30.0)):
        opts = {}
        rows += [row(model, opts, "pgd", 1 / 255, base + 40, seed=0, threat_model="pixel"),
                 row(model, opts, "pgd", 4 / 255, base, seed=0, threat_model="pixel"),
                 row(model, opts, "pgd", 4 / 255, base + 10, seed=1, threat_model="pixel"),
                 row(model, opts, "fgsm", 4 / 255, base + 5, threat_model="pixel"),
                 row(model, opts, "sld", 10.0, base + 1, norm="L1", threat_model="paper"),
                 row(model, opts, "pgd", 4 / 255, base + 2, seed=0, threat_model="paper")]
    return pd.DataFrame(rows)


def test_paper_attacks_view_highest_budget_seeds_and_threat_models(frame):
    view = build_view(frame, "paper-attacks")
    assert list(view.columns) == ["model", "PGD 4/255 (paper)", "PGD 4/255", "FGSM 4/255", "SLD 10 (paper)"]
    assert list(view["model"]) == ["SymViT", "RPC-SymViT (4 iter/layer 1)"]
    # two seeds of PGD at 4/255: 10 and 20 -> mean 15, sample std 7.07
    assert view["PGD 4/255"].tolist() == ["15.00 ± 7.07", "35.00 ± 7.07"]
    assert view["FGSM 4/255"].tolist() == pytest.approx([15.0, 35.0])
    assert view["SLD 10 (paper)"].tolist() == pytest.approx([11.0, 31.0])


def test_attacks_view_shows_mean_and_std_over_seeds(frame):
    view = build_view(frame[frame["variant"].str.contains('"pixel"')], "attacks")
    pgd4 = view[(view["attack"] == "pgd") & (view["eps"] == "4/255")]
    assert pgd4["symvit_tiny_patch16_224"].tolist() == ["15.00 ± 7.07"]
    pgd1 = view[(view["attack"] == "pgd") & (view["eps"] == "1/255")]
    assert pgd1["symvit_tiny_patch16_224"].tolist() == [50.0]  # one seed: the number itself


def test_threat_model_notes_in_markdown_and_latex(frame):
    notes = threat_model_notes(frame)
    assert notes[0].startswith("Threat model pixel: budgets in pixel units")
    assert "1/255 there is about 0.23/255 in pixels" in notes[1] and "2x + delta" in notes[1]
    view = build_view(frame, "paper-attacks")
    md = export(view, "md", notes=notes)
    assert md.splitlines()[-1] == f"_{notes[1]}_"
    latex = export(view, "latex", notes=notes)
    assert "\\par\\footnotesize Threat model paper (official normalized space" in latex
    assert export(view, "csv", notes=notes) == export(view, "csv")  # data formats carry it in their rows


def test_paper_labels_keep_user_labels_and_tell_shared_names_apart_by_weights():
    import pandas as pd

    from robustbench_rpc.reporting.paper import paper_labels

    frame = pd.DataFrame({
        "model_label": ["symvit_tiny", "rpc@aaaa", "rpc@bbbb", "PAP at inference", "rpc_fan"],
        "model": ["symvit_tiny_patch16_224", "rpc_symvit_tiny_patch16_224", "rpc_symvit_tiny_patch16_224",
                  "PAP at inference", "rpc_fan_tiny"],
        "model_options": ["", "", "", '{"architecture": "rpc_symvit_tiny_patch16_224"}', '{"rpc_iters": 2}'],
        "checkpoint_sha256": ["0" * 64, "a" * 64, "b" * 64, "c" * 64, None],
    })
    assert paper_labels(frame) == {
        "symvit_tiny": "SymViT",
        "rpc@aaaa": "RPC-SymViT (4 iter/layer 1), weights aaaaaaaa",
        "rpc@bbbb": "RPC-SymViT (4 iter/layer 1), weights bbbbbbbb",
        "PAP at inference": "PAP at inference",  # the user's label, kept
        "rpc_fan": "RPC-FAN (2 iter/layer 1)",
    }
