"""Segmenter: the forward against a re-computation from the paper's equations, sliding windows, checkpoint keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_rpc.models.attention import RPCConfig
from robustbench_rpc.models.segmenter import (
    LinearDecoder,
    MaskTransformerDecoder,
    Segmenter,
    sliding_window,
    window_anchors,
)
from robustbench_rpc.models.symvit import SymViT

N_CLS = 5


def tiny_encoder(rpc: bool = False) -> SymViT:
    torch.manual_seed(0)
    return SymViT(img_size=32, patch_size=8, num_classes=0, embed_dim=24, depth=2, num_heads=2,
                  rpc=RPCConfig(iters=2, layers="first") if rpc else None)


def mask_segmenter(rpc: bool = False) -> Segmenter:
    encoder = tiny_encoder(rpc)
    torch.manual_seed(1)
    decoder = MaskTransformerDecoder(N_CLS, d_encoder=24, n_layers=2, n_heads=2, d_model=16, d_ff=40)
    for p in decoder.parameters():  # LayerNorms away from their identity initialization, so the test sees them
        p.data.add_(torch.randn_like(p) * 0.1)
    return Segmenter(encoder, decoder, N_CLS).eval().double()


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def decoder_by_hand(sd: dict[str, torch.Tensor], tokens: torch.Tensor, heads: int, layers: int,
                    grid: tuple[int, int]) -> torch.Tensor:
    """The mask transformer written from the Segmenter paper's equations, on the raw weights."""
    x = tokens @ sd["proj_dec.weight"].T + sd["proj_dec.bias"]
    x = torch.cat([x, sd["cls_emb"].expand(len(x), -1, -1)], dim=1)
    d = x.shape[-1]
    for i in range(layers):
        w = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = layer_norm(x, w["norm1.weight"], w["norm1.bias"])
        q, k, v = (h @ w["attn.qkv.weight"].T + w["attn.qkv.bias"]).chunk(3, dim=-1)
        split = [t.reshape(len(t), -1, heads, d // heads).transpose(1, 2) for t in (q, k, v)]
        att = torch.softmax(split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
        o = (att @ split[2]).transpose(1, 2).reshape(x.shape)
        x = x + o @ w["attn.proj.weight"].T + w["attn.proj.bias"]
        h = layer_norm(x, w["norm2.weight"], w["norm2.bias"])
        hidden = F.gelu(h @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"])
        x = x + hidden @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"]
    x = layer_norm(x, sd["decoder_norm.weight"], sd["decoder_norm.bias"])
    patches, classes = x[:, :-N_CLS] @ sd["proj_patch"], x[:, -N_CLS:] @ sd["proj_classes"]
    patches = patches / patches.norm(dim=-1, keepdim=True)
    classes = classes / classes.norm(dim=-1, keepdim=True)
    masks = layer_norm(patches @ classes.transpose(1, 2), sd["mask_norm.weight"], sd["mask_norm.bias"])
    return masks.permute(0, 2, 1).reshape(len(x), N_CLS, *grid)


@pytest.mark.parametrize("rpc", [False, True])
def test_mask_transformer_forward_equals_the_equations(rpc):
    model = mask_segmenter(rpc)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        out = model(images)
        tokens = model.encoder.forward_features(images)[:, 1:]  # the class token is not decoded
        sd = {k: v.double() for k, v in model.decoder.state_dict().items()}
        masks = decoder_by_hand(sd, tokens, heads=2, layers=2, grid=(4, 4))
        expected = F.interpolate(masks, size=(32, 32), mode="bilinear", align_corners=False)
    assert out.shape == (2, N_CLS, 32, 32)
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)


def test_linear_decoder_and_padding_to_the_patch_grid():
    encoder = tiny_encoder().double()
    decoder = LinearDecoder(N_CLS, 24).double()
    model = Segmenter(encoder, decoder, N_CLS).eval()
    images = torch.rand(1, 3, 30, 27, dtype=torch.float64)  # padded to 32 x 32 (a 4 x 4 grid), then cropped
    with torch.no_grad():
        out = model(images)
        padded = F.pad(images, (0, 5, 0, 2))
        tokens = encoder.forward_features(padded)[:, 1:]
        logits = (tokens @ decoder.head.weight.T + decoder.head.bias).transpose(1, 2).reshape(1, N_CLS, 4, 4)
        expected = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)[..., :30, :27]
    assert out.shape == (1, N_CLS, 30, 27) and torch.allclose(out, expected, atol=1e-12, rtol=0)


def test_window_anchors_end_flush_with_the_border():
    assert window_anchors(32, 32, 16) == [0]
    assert window_anchors(48, 32, 16) == [0, 16]
    assert window_anchors(50, 32, 16) == [0, 16, 18]
    assert window_anchors(100, 32, 24) == [0, 24, 48, 68]


def test_sliding_window_equals_whole_image_where_one_window_covers_it():
    model = mask_segmenter()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(sliding_window(model, images, 32, 16, N_CLS), model(images).softmax(1), atol=1e-14)


def test_sliding_window_averages_overlapping_logits():
    model = mask_segmenter()
    images = torch.rand(1, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        probs = sliding_window(model, images, 32, 16, N_CLS, batch_size=1)
        left, right = model(images[..., :32]), model(images[..., 16:])
    expected = torch.zeros(1, N_CLS, 32, 48, dtype=torch.float64)
    expected[..., :16] = left[..., :16]
    expected[..., 16:32] = (left[..., 16:] + right[..., :16]) / 2
    expected[..., 32:] = right[..., 16:]
    assert torch.allclose(probs, expected.softmax(1), atol=1e-14)
    with pytest.raises(ValueError, match="smaller than the 32-pixel window"):
        sliding_window(model, images[..., :20], 32, 16, N_CLS)


def test_segmenter_checkpoint_keys_load_by_name():
    model = mask_segmenter()
    state = model.state_dict()
    assert {"decoder.cls_emb", "decoder.proj_dec.weight", "decoder.proj_patch", "decoder.proj_classes",
            "decoder.decoder_norm.weight", "decoder.mask_norm.weight", "decoder.blocks.1.mlp.fc2.bias",
            "decoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.qkv.weight"} <= set(state)
    assert state["encoder.blocks.0.attn.qkv.weight"].shape == (48, 24)  # symmetric attention: K then V
    fresh = Segmenter(tiny_encoder(), MaskTransformerDecoder(N_CLS, 24, 2, 2, 16, 40), N_CLS).double().eval()
    fresh.load_state_dict(state, strict=True)
    images = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(fresh(images), model(images))
