"""Full-size official SymViT layouts load strictly, with width, depth and heads read off the weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import robustbench_rpc
from robustbench_rpc.errors import UserError

KEYS = Path(__file__).parent / "fixtures" / "parity" / "keys"


def read_listing(path: Path) -> dict[str, tuple[int, ...]]:
    """Parse a ``key<TAB>[shape]`` listing (first line is a header)."""
    shapes = {}
    for line in path.read_text().splitlines()[1:]:
        key, shape = line.split("\t")
        shapes[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return shapes


def scaled(listing: dict[str, tuple[int, ...]], width: int) -> dict[str, tuple[int, ...]]:
    """Turn the DeiT-tiny listing (width 192) into the same layout at another width."""
    table = {192: width, 384: 2 * width, 768: 4 * width}
    return {k: tuple(table.get(d, d) for d in s) for k, s in listing.items()}


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


@pytest.mark.parametrize(
    "width,name,heads",
    [(192, "symvit_tiny_patch16_224", 3), (348, "rpc_symvit_small_patch16_224", 6),
     (768, "symvit_base_patch16_224", 12)],
)
def test_official_full_size_layout_loads_strictly(tmp_path, width, name, heads):
    listing = read_listing(KEYS / "kpca_deit_tiny.txt")
    shapes = scaled(listing, width)
    assert shapes["blocks.0.attn.qkv.weight"] == (2 * width, width)
    path = tmp_path / "weights.safetensors"
    save_file(random_state(shapes), str(path))
    model = robustbench_rpc.load_model(name, str(path))
    own = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
    assert own == shapes
    assert model.model.blocks[0].attn.num_heads == heads
    assert model.model.depth == 12
    assert model.info.num_params == sum(torch.Size(s).numel() for s in shapes.values())


def test_tiny_listing_matches_parameter_count():
    header = (KEYS / "kpca_deit_tiny.txt").read_text().splitlines()[0]
    params = int(re.search(r"params=(\d+)", header).group(1))
    model = robustbench_rpc.load_model("symvit_tiny_patch16_224")
    assert model.info.num_params == params


def test_other_image_size_resamples_position_embedding(tmp_path):
    shapes = read_listing(KEYS / "kpca_deit_tiny.txt")
    path = tmp_path / "w.safetensors"
    save_file(random_state(shapes), str(path))
    model = robustbench_rpc.load_model("symvit_tiny_patch16_224", str(path), img_size=96)
    assert model.model.pos_embed.shape == (1, 37, 192)
    assert model(torch.rand(1, 3, 96, 96)).shape == (1, 1000)


def test_wrong_class_count_is_refused(tmp_path):
    shapes = read_listing(KEYS / "kpca_deit_tiny.txt")
    path = tmp_path / "w.safetensors"
    save_file(random_state(shapes), str(path))
    with pytest.raises(UserError, match="1000-class head but 10 classes"):
        robustbench_rpc.load_model("symvit_tiny_patch16_224", str(path), num_classes=10)
