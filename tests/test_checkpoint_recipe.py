"""Checkpoints that say what they are: the recorded recipe decides the heads; a disagreement warns or refuses."""

from __future__ import annotations

import argparse
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from clirun import run_cli

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.checkpoint import sha256_of
from robustbench_rpc.models.recipe import CheckpointRecipeWarning, read_recipe
from robustbench_rpc.models.shipped import SHIPPED_CHECKPOINTS
from robustbench_rpc.models.wrapper import load_model

DEPTH, PATCH, IMG, CLASSES = 2, 16, 32, 10


def _deit_small_like_state_dict(width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A SymViT state dict (KPCA layout) of ``width`` with random weights, 2 blocks, 32x32 input, 10 classes."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    tokens = (IMG // PATCH) ** 2 + 1
    sd = {"cls_token": rand(1, 1, width), "pos_embed": rand(1, tokens, width),
          "patch_embed.proj.weight": rand(width, 3, PATCH, PATCH), "patch_embed.proj.bias": rand(width)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + rand(width), b + "norm1.bias": rand(width),
               b + "attn.qkv.weight": rand(2 * width, width, scale=0.05), b + "attn.qkv.bias": rand(2 * width),
               b + "attn.proj.weight": rand(width, width), b + "attn.proj.bias": rand(width),
               b + "norm2.weight": 1 + rand(width), b + "norm2.bias": rand(width),
               b + "mlp.fc1.weight": rand(4 * width, width), b + "mlp.fc1.bias": rand(4 * width),
               b + "mlp.fc2.weight": rand(width, 4 * width), b + "mlp.fc2.bias": rand(width)}
    sd |= {"norm.weight": 1 + rand(width), "norm.bias": rand(width), "head.weight": rand(CLASSES, width),
           "head.bias": rand(CLASSES)}
    return sd


def reference_logits(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """The official SymViT forward written out in float64: keys double as queries, ``heads`` heads."""
    p = {k: v.double() for k, v in sd.items()}
    x = x.double()
    width = p["cls_token"].shape[-1]
    tokens = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=PATCH)
    tokens = tokens.flatten(2).transpose(1, 2)
    h = torch.cat([p["cls_token"].expand(len(x), -1, -1), tokens], dim=1) + p["pos_embed"]
    for i in range(DEPTH):
        b = f"blocks.{i}."
        y = F.layer_norm(h, (width,), p[b + "norm1.weight"], p[b + "norm1.bias"], eps=1e-6)
        kv = y @ p[b + "attn.qkv.weight"].T + p[b + "attn.qkv.bias"]
        k, v = kv[..., :width], kv[..., width:]
        d = width // heads
        k = k.reshape(len(x), -1, heads, d).transpose(1, 2)
        v = v.reshape(len(x), -1, heads, d).transpose(1, 2)
        attn = torch.softmax(k @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(len(x), -1, width)
        h = h + y @ p[b + "attn.proj.weight"].T + p[b + "attn.proj.bias"]
        y = F.layer_norm(h, (width,), p[b + "norm2.weight"], p[b + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"])
        h = h + y @ p[b + "mlp.fc2.weight"].T + p[b + "mlp.fc2.bias"]
    h = F.layer_norm(h, (width,), p["norm.weight"], p["norm.bias"], eps=1e-6)
    return h[:, 0] @ p["head.weight"].T + p["head.bias"]



def _save(tmp_path, sd, **args) -> str:
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": sd, "epoch": 299, "args": argparse.Namespace(**args)}, path)
    return str(path)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.model(x).double()  # the inner model: normalized input, as the reference takes it


@pytest.mark.parametrize("width", [384, 348])  # the official DeiT-small width, and the 348 (6 x 58)
def test_recorded_deit_small_gives_official_logits_under_small_and_tiny(tmp_path, width):
    sd = _deit_small_like_state_dict(width)
    path = _save(tmp_path, sd, model="deit_small_patch16_224", input_size=IMG)
    x = torch.randn(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    official = reference_logits(sd, x, heads=6)
    assert (official - reference_logits(sd, x, heads=3)).abs().max() > 0.02  # the heads matter here
    assert (official[0] - official[1]).abs().max() > 0.02  # and so does the input

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the small name agrees with the checkpoint: no warning
        small = load_model("symvit_small_patch16_224", path)
    assert small.model.blocks[0].attn.num_heads == 6
    torch.testing.assert_close(_logits(small, x), official, atol=1e-4, rtol=1e-4)

    with pytest.warns(CheckpointRecipeWarning) as record:
        tiny = load_model("symvit_tiny_patch16_224", path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "deit_small_patch16_224" in message and "symvit_tiny_patch16_224" in message
    assert "size small vs tiny" in message and "6 heads vs 3" in message
    assert tiny.model.blocks[0].attn.num_heads == 6  # never 3 heads silently
    torch.testing.assert_close(_logits(tiny, x), official, atol=1e-4, rtol=1e-4)


def test_recorded_heads_that_cannot_split_the_width_are_refused(tmp_path):
    path = _save(tmp_path, _deit_small_like_state_dict(384), model="deit_small_patch16_224", num_heads=5)
    with pytest.raises(UserError, match=r"records 5 heads \(args.num_heads: deit_small_patch16_224\) but its "
                                        r"weights are 384 wide, which 5 heads cannot split"):
        load_model("symvit_small_patch16_224", path)


def test_asked_heads_override_the_recipe_with_a_warning(tmp_path):
    path = _save(tmp_path, _deit_small_like_state_dict(384), model="deit_small_patch16_224")
    with pytest.warns(CheckpointRecipeWarning, match="6 heads recorded .* vs num_heads=12 asked for"):
        model = load_model("symvit_small_patch16_224", path, num_heads=12)
    assert model.model.blocks[0].attn.num_heads == 12


def test_recipe_sources() -> None:
    assert read_recipe({}) is None
    fan = read_recipe({"arch": "fan_small_12_p16_224"})
    assert (fan.name, fan.source, fan.num_heads) == ("fan_small_12_p16_224", "arch", None)  # FAN: heads in weights
    deit = read_recipe({"args": {"model": "deit_base_patch16_224"}})
    assert (deit.num_heads, deit.heads_source) == (12, "args.model (base)")
    explicit = read_recipe({"args": {"model": "deit_tiny_patch16_224", "num_heads": 4}})
    assert (explicit.num_heads, explicit.heads_source) == (4, "args.num_heads")


def test_shipped_digits_weights_carry_their_config_and_load_by_default():
    for name, path in SHIPPED_CHECKPOINTS.items():
        model = load_model(name)  # no checkpoint: the shipped weights, not a random initialisation
        assert model.info.checkpoint_sha256 == sha256_of(path)
        assert model.info.recipe["name"] == name and model.info.recipe["num_heads"] == 4
    rpc = load_model("rpc_symvit_digits_patch8_32").info.recipe["rpc"]
    assert rpc == {"rpc_iters": 4, "rpc_lambda": 4.0, "rpc_layers": "first", "rpc_threshold": "code"}
    fresh = load_model("symvit_digits_patch8_32", shipped_weights=False)
    assert fresh.info.checkpoint is None


def test_shipped_4_head_weights_under_the_tiny_name_keep_4_heads_and_warn():
    path = str(SHIPPED_CHECKPOINTS["symvit_digits_patch8_32"])
    with pytest.warns(CheckpointRecipeWarning, match="records model symvit_digits_patch8_32 .* loaded as "
                                                     "symvit_tiny_patch16_224: size digits vs tiny, 4 heads vs 3"):
        tiny = load_model("symvit_tiny_patch16_224", path)
    digits = load_model("symvit_digits_patch8_32")
    assert tiny.model.blocks[0].attn.num_heads == 4
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(tiny, x), _logits(digits, x))


def test_demo_checkpoints_write_the_model_config(tmp_path):
    from robustbench_rpc.demo.train import save_demo_checkpoint

    model = load_model("rpc_symvit_digits_patch8_32", shipped_weights=False, rpc_iters=2)
    path = tmp_path / "ours.safetensors"
    save_demo_checkpoint(model, path, {"model": "rpc_symvit_digits_patch8_32"})
    loaded = load_model("rpc_symvit_digits_patch8_32", str(path))
    assert loaded.model.rpc.iters == 2  # the recorded RPC options, not the builder's default 4
    assert loaded.info.recipe["rpc"]["rpc_iters"] == 2


def test_models_info_on_a_checkpoint_prints_what_it_says(tmp_path, capsys):
    path = _save(tmp_path, _deit_small_like_state_dict(384), model="deit_small_patch16_224")
    code, out, _ = run_cli(capsys, "models", "info", path, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["weights_family"] == "symvit" and info["weights_config"]["embed_dim"] == 384
    assert info["recipe"] == {"name": "deit_small_patch16_224", "source": "args.model", "num_heads": 6,
                              "heads_source": "args.model (small)", "rpc": None}
    assert info["training_metadata"] == {"epoch": 299, "args.model": "deit_small_patch16_224"}
    assert info["load_as"].startswith("symvit_small_patch16_224")
    code, out, _ = run_cli(capsys, "models", "info", path)
    assert code == 0 and "deit_small_patch16_224 (args.model)" in out and "6 (args.model (small))" in out


def test_reconstruction_tiny_keeps_its_six_heads_under_args_model_deit_tiny(tmp_path):
    # the official Reconstruction code records args.model = deit_tiny_patch16_224, whose deit_tiny has 6 heads:
    # DeiT-tiny's 3 must not be read into that name for the kpca family
    import timm

    import robustbench_rpc.models  # noqa: F401

    source = timm.create_model("kpca_vit_tiny_patch16_224", embed_dim=48, depth=1, img_size=32, num_classes=10)
    path = tmp_path / "recon.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(model="deit_tiny_patch16_224")}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointRecipeWarning)
        model = load_model("kpca_vit_tiny_patch16_224", str(path))
    assert model.model.blocks[0].attn.num_heads == 6 == source.blocks[0].attn.num_heads
