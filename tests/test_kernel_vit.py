"""Scaled Attention (S, alpha x Asym) and KPCA ViTs reproduce the official code on the shared fixtures (set A)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from clirun import run_cli

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.wrapper import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "kpca"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CASES = {c["case"]: c for c in MANIFEST["cases"]}
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def model_name(case: dict) -> str:
    """Our model for a case of the manifest: by its family and, for Scaled Attention, ``s_scalar``."""
    if case["family"] == "kpca_recon":
        return "kpca_vit_tiny_patch16_224"
    scalar = case["constructor_args"]["s_scalar"]
    return "scaled_alpha_vit_tiny_patch16_224" if scalar else "scaled_vit_tiny_patch16_224"


MODEL_OF = {name: model_name(case) for name, case in CASES.items()}


def load_case(name: str, dtype: torch.dtype) -> tuple[torch.nn.Module, dict, dict]:
    """Load the case's checkpoint into our model (heads from the manifest), its inputs and its reference outputs."""
    case = CASES[name]
    model = load_model(MODEL_OF[name], str(FIXTURES / case["checkpoint"]),
                       num_heads=case["constructor_args"]["num_heads"]).to(dtype)
    inputs = torch.load(FIXTURES / case["inputs"])
    key = "float64" if dtype == torch.float64 else "float32"
    ref = torch.load(FIXTURES / case["outputs"][key])
    return model, inputs, ref



@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_official(name, dtype):
    model, inputs, ref = load_case(name, dtype)
    with torch.no_grad():
        logits = model.model(inputs["images"].to(dtype))  # the official models were fed the normalized images
    tol = TOLERANCE["float64" if dtype == torch.float64 else "float32"]
    assert logits.dtype == dtype
    assert (logits - ref["logits"]).abs().max().item() <= tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_pixel_entry_point_matches_official(dtype):
    """Through the wrapper (pixels in [0, 1], normalization inside), the logits still match."""
    model, inputs, ref = load_case("scaled_alpha_asym", dtype)
    mean, std = inputs["mean"].double().view(1, 3, 1, 1), inputs["std"].double().view(1, 3, 1, 1)
    assert torch.allclose(model.mean.double(), mean) and torch.allclose(model.std.double(), std)
    pixels = (inputs["images"].double() * std + mean).to(dtype)
    with torch.no_grad():
        logits = model(pixels)
    assert (logits - ref["logits"]).abs().max().item() <= 10 * TOLERANCE[str(dtype).split(".")[1]]


def test_models_are_registered_in_timm_and_build_at_their_size():
    for prefix in ("scaled_vit", "scaled_alpha_vit", "kpca_vit"):
        for size in ("tiny", "small", "base"):
            assert f"{prefix}_{size}_patch16_224" in timm.list_models(f"{prefix}_*")
    model = timm.create_model("scaled_vit_tiny_patch16_224")
    assert model.blocks[0].attn.s.shape == (3, 197, 197)
    assert timm.create_model("scaled_alpha_vit_small_patch16_224").blocks[0].attn.s.shape == (1,)
    assert timm.create_model("kpca_vit_tiny_patch16_224").blocks[0].attn.num_heads == 6  # as the official code


def test_models_list_shows_the_families(capsys):
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["scaled_vit_base_patch16_224"]["family"] == "scaled_s"
    assert rows["scaled_alpha_vit_tiny_patch16_224"]["family"] == "scaled_alpha"
    assert rows["kpca_vit_small_patch16_224"]["family"] == "kpca"


def test_ema_on_checkpoint_without_ema_is_an_error():
    with pytest.raises(UserError, match=r"has no EMA weights \(looked for model_ema"):
        load_model("kpca_vit_tiny_patch16_224", str(FIXTURES / CASES["recon_vit"]["checkpoint"]), use_ema=True,
                   num_heads=3)


def test_ema_weights_are_used_when_present(tmp_path):
    ckpt = torch.load(FIXTURES / CASES["recon_vit"]["checkpoint"], weights_only=False)
    ema = {k: v.clone() for k, v in ckpt["model"].items()}
    ema["head.bias"] = ema["head.bias"] + 1.0
    path = tmp_path / "with_ema.pth"
    torch.save({**ckpt, "model_ema": ema}, path)
    plain = load_model("kpca_vit_tiny_patch16_224", str(path), num_heads=3)
    averaged = load_model("kpca_vit_tiny_patch16_224", str(path), num_heads=3, use_ema=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(averaged(x) - plain(x), torch.ones(2, 10), atol=1e-5)


def test_scaled_s_refuses_another_input_size(capsys):
    ckpt = str(FIXTURES / CASES["scaled_s"]["checkpoint"])
    code, _, err = run_cli(capsys, "models", "info", "scaled_vit_tiny_patch16_224", "-c", ckpt,
                           "--model-arg", "num_heads=3", "--model-arg", "img_size=64")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "trained on 17 tokens but the model was built for 65" in err
    model = load_model("scaled_vit_tiny_patch16_224", ckpt, num_heads=3)
    with pytest.raises(UserError, match="S is a learned 17x17 matrix"):
        model.model.blocks[0].attn(torch.zeros(1, 10, 48))  # 10 tokens reach S of 17


def test_scaled_s_preprocessing_size_is_one_sentence():
    from robustbench_rpc.models.wrapper import load_model as load

    with pytest.raises(UserError) as exc:
        load("scaled_vit_tiny_patch16_224", str(FIXTURES / CASES["scaled_s"]["checkpoint"]), num_heads=3,
             preprocessing={"input_size": (3, 64, 64)})
    assert str(exc.value) == (
        "scaled_vit_tiny_patch16_224 was built for 32x32 inputs but the preprocessing gives 64x64; its Scaled "
        "Attention S is a learned 17x17 matrix per head, so it only takes 32x32 inputs."
    )


@pytest.mark.parametrize(
    "model, case, hint",
    [
        ("symvit_tiny_patch16_224", "scaled_s", "looks like a scaled_s checkpoint"),
        ("kpca_vit_tiny_patch16_224", "scaled_alpha_asym", "try --model scaled_alpha_vit_tiny_patch16_224"),
        ("scaled_vit_tiny_patch16_224", "scaled_alpha_asym", "looks like a scaled_alpha checkpoint"),
        ("scaled_alpha_vit_tiny_patch16_224", "recon_vit", "looks like a vit checkpoint"),
        ("deit_tiny_patch16_224", "scaled_s", "it looks like a scaled_s checkpoint: try scaled_vit_tiny_patch16_224"),
    ],
)
def test_checkpoint_of_another_family_names_it(capsys, model, case, hint):
    code, _, err = run_cli(capsys, "models", "info", model, "-c", str(FIXTURES / CASES[case]["checkpoint"]))
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1
    assert hint in err
