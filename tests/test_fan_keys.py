"""Full-size official FAN / FAN-Hybrid / RPC-FAN layouts: our models have exactly those keys and shapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import robustbench_rpc
from robustbench_rpc.models.checkpoint import guess_family
from robustbench_rpc.models.fan import ARCHS, infer_fan_config

KEYS = Path(__file__).parent / "fixtures" / "parity" / "keys"
LISTINGS = sorted(p for p in KEYS.glob("*.txt") if p.name.startswith(("nvlabs_fan_", "rachtsy_fan_")))


def read_listing(path: Path) -> tuple[dict[str, tuple[int, ...]], int]:
    """Parse a ``key<TAB>[shape]`` listing; return the shapes (in file order) and the header's parameter count."""
    lines = path.read_text().splitlines()
    params = int(re.search(r"params=(\d+)", lines[0]).group(1))
    shapes = {}
    for line in lines[1:]:
        key, shape = line.split("\t")
        shapes[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return shapes, params


def model_names(path: Path) -> list[str]:
    """Our registered names that must reproduce a listing (RPC-FAN listings serve symfan_* and rpc_fan_*)."""
    stem = path.stem
    if stem.startswith("nvlabs_"):
        return [stem[len("nvlabs_") :]]
    arch = stem[len("rachtsy_fan_sym_robust_") :]
    return [f"sym{arch}", f"rpc_{arch}"]


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random weights of a plausible scale (norm weights and layer scales near 1, so no denormal slow-down)."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in shapes.items():
        name = key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            out[key] = torch.tensor(7)
        elif (
            name == "running_var"
            or name in ("gamma", "gamma1", "gamma2", "temperature")
            or (name == "weight" and len(shape) == 1)
        ):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.05
    return out


def test_all_official_listings_are_covered():
    names = {n for p in LISTINGS for n in model_names(p)}
    assert set(ARCHS) <= names
    assert {"symfan_tiny_12_p16_224", "rpc_fan_tiny_12_p16_224", "rpc_fan_small_12_p16_224"} <= names


@pytest.mark.parametrize("path", LISTINGS, ids=[p.stem for p in LISTINGS])
def test_registered_model_has_the_official_keys_and_shapes(path):
    shapes, params = read_listing(path)
    for name in model_names(path):
        with torch.device("meta"):
            model = timm.create_model(name)
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert list(own) == list(shapes), f"{name}: key names or order differ"
        assert own == shapes, name
        assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("path", LISTINGS, ids=[p.stem for p in LISTINGS])
def test_config_inferred_from_the_listing_is_the_registered_one(path):
    shapes, _ = read_listing(path)
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    inferred = infer_fan_config(state)
    arch = model_names(path)[0].removeprefix("sym").removeprefix("rpc_")
    expected = ARCHS[arch]
    for key in ("embed_dim", "depth", "num_heads"):
        assert inferred[key] == expected[key], key
    assert (
        inferred["num_classes"] == 1000 and inferred["mlp_ratio"] == 4.0 and inferred["cls_attn_layers"] == 2
    )
    if "backbone_depths" in expected:
        assert inferred["backbone_depths"] == list(expected["backbone_depths"])
        assert inferred["backbone_dims"] == list(expected["backbone_dims"])
        assert guess_family(state) == "fan_hybrid"
    else:
        assert inferred["patch_size"] == 16
        assert guess_family(state) == ("rpc_fan" if path.stem.startswith("rachtsy") else "fan")


TINY = [
    ("nvlabs_fan_tiny_12_p16_224", "fan_tiny_12_p16_224"),
    ("nvlabs_fan_tiny_8_p4_hybrid", "fan_tiny_8_p4_hybrid"),
    ("rachtsy_fan_sym_robust_fan_tiny_12_p16_224", "rpc_fan_tiny_12_p16_224"),
]


@pytest.mark.parametrize("listing,name", TINY, ids=[n for _, n in TINY])
def test_full_size_tiny_state_dict_loads_strictly_and_runs(listing, name):
    shapes, _ = read_listing(KEYS / f"{listing}.txt")
    state = random_state(shapes)
    with torch.device("meta"):
        model = timm.create_model(name)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    if (
        name != "fan_tiny_12_p16_224"
    ):  # the FAN-ViT forward is covered by the parity tests; keep this file quick
        with torch.no_grad():
            logits = model(torch.rand(1, 3, 64, 64) * 2 - 1)
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_full_size_rpc_fan_file_loads_through_load_model(tmp_path):
    listing = "rachtsy_fan_sym_robust_fan_tiny_12_p16_224"
    shapes, params = read_listing(KEYS / f"{listing}.txt")
    path = tmp_path / "weights.safetensors"
    save_file(random_state(shapes), str(path))
    model = robustbench_rpc.load_model("rpc_fan_tiny_12_p16_224", str(path))
    assert model.info.num_params == params
    assert model.model.depth == 12 and model.model.blocks[0].attn.num_heads == 4
    assert model.info.rpc == "PAP n=4 lambda=4 in blocks [0] (code threshold)"


def test_wrapped_training_checkpoint_with_module_prefix_loads(tmp_path):
    """A DDP-trained timm-style dict (``state_dict`` with ``module.`` prefixes) loads into a small FAN."""
    model = timm.create_model("fan_tiny_12_p16_224", embed_dim=32, depth=1, num_heads=2, num_classes=5).eval()
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "arch": "fan_tiny_12_p16_224", "state_dict": state}, path)
    loaded = robustbench_rpc.load_model("fan_tiny_12_p16_224", str(path))
    assert loaded.model.embed_dim == 32 and loaded.model.depth == 1 and loaded.model.num_classes == 5
    assert loaded.model.blocks[0].mlp.num_heads == 2
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(loaded.normalize(x)))


def test_old_pos_embeder_names_are_mapped(tmp_path):
    model = timm.create_model("fan_tiny_12_p16_224", embed_dim=32, depth=1, num_heads=2, num_classes=5).eval()
    state = {k.replace("pos_embed.", "pos_embeder.", 1): v for k, v in model.state_dict().items()}
    assert "pos_embeder.token_projection.weight" in state
    path = tmp_path / "old.pth"
    torch.save(state, path)
    loaded = robustbench_rpc.load_model("fan_tiny_12_p16_224", str(path))
    assert torch.equal(
        loaded.model.pos_embed.token_projection.weight, model.pos_embed.token_projection.weight
    )
