"""Segmentation models: Segmenter-format checkpoints against a functional re-computation, windows, errors, names."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.nn.functional as F
import yaml

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.segmentation import (
    CONFIG_KEY,
    SEGMENTATION_MODELS,
    config_metadata,
    is_segmentation_model,
    load_segmentation_model,
)

D, HEADS, DEPTH, PATCH, WINDOW, N_CLS, DEC_LAYERS = 64, 4, 2, 8, 32, 5, 1


def segmenter_state(symmetric: bool, decoder: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the public Segmenter code's names and shapes (encoder.*, decoder.*)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def ln(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + rnd(dim, scale=0.1), f"{prefix}.bias": rnd(dim, scale=0.1)}

    def block(prefix: str, dim: int, hidden: int, qkv_rows: int) -> dict[str, torch.Tensor]:
        return {**ln(f"{prefix}.norm1", dim), **ln(f"{prefix}.norm2", dim),
                f"{prefix}.attn.qkv.weight": rnd(qkv_rows, dim), f"{prefix}.attn.qkv.bias": rnd(qkv_rows),
                f"{prefix}.attn.proj.weight": rnd(dim, dim), f"{prefix}.attn.proj.bias": rnd(dim),
                f"{prefix}.mlp.fc1.weight": rnd(hidden, dim), f"{prefix}.mlp.fc1.bias": rnd(hidden),
                f"{prefix}.mlp.fc2.weight": rnd(dim, hidden), f"{prefix}.mlp.fc2.bias": rnd(dim)}

    grid = WINDOW // PATCH
    sd = {"encoder.cls_token": rnd(1, 1, D), "encoder.pos_embed": rnd(1, grid * grid + 1, D),
          "encoder.patch_embed.proj.weight": rnd(D, 3, PATCH, PATCH, scale=0.05),
          "encoder.patch_embed.proj.bias": rnd(D), **ln("encoder.norm", D),
          "encoder.head.weight": rnd(1000, D), "encoder.head.bias": rnd(1000)}
    for i in range(DEPTH):
        sd.update(block(f"encoder.blocks.{i}", D, 2 * D, (2 if symmetric else 3) * D))
    if decoder == "linear":
        sd.update({"decoder.head.weight": rnd(N_CLS, D), "decoder.head.bias": rnd(N_CLS)})
    else:
        sd.update({"decoder.cls_emb": rnd(1, N_CLS, D), "decoder.proj_dec.weight": rnd(D, D),
                   "decoder.proj_dec.bias": rnd(D), "decoder.proj_patch": rnd(D, D),
                   "decoder.proj_classes": rnd(D, D), **ln("decoder.decoder_norm", D),
                   **ln("decoder.mask_norm", N_CLS)})
        for i in range(DEC_LAYERS):
            sd.update(block(f"decoder.blocks.{i}", D, 4 * D, 3 * D))
    return sd


def _ln(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)


def _block(x: torch.Tensor, sd: dict, prefix: str, heads: int, symmetric: bool) -> torch.Tensor:
    b, n, c = x.shape
    h = _ln(x, sd, f"{prefix}.norm1")
    qkv = h @ sd[f"{prefix}.attn.qkv.weight"].T + sd[f"{prefix}.attn.qkv.bias"]
    if symmetric:  # keys then values; the queries are the keys
        k, v = qkv.split(c, dim=-1)
        q = k
    else:
        q, k, v = qkv.split(c, dim=-1)
    q, k, v = (t.reshape(b, n, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    att = ((q @ k.transpose(-1, -2)) * (c // heads) ** -0.5).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(b, n, c)
    x = x + y @ sd[f"{prefix}.attn.proj.weight"].T + sd[f"{prefix}.attn.proj.bias"]
    h = _ln(x, sd, f"{prefix}.norm2")
    h = F.gelu(h @ sd[f"{prefix}.mlp.fc1.weight"].T + sd[f"{prefix}.mlp.fc1.bias"])
    return x + h @ sd[f"{prefix}.mlp.fc2.weight"].T + sd[f"{prefix}.mlp.fc2.bias"]


def reference_logits(sd: dict, pixels: torch.Tensor, symmetric: bool, decoder: str,
                     mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """Segmenter on one window, written from the paper's equations and the public code's names."""
    x = (pixels - mean) / std
    b = x.shape[0]
    tok = F.conv2d(x, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"], stride=PATCH)
    grid = tok.shape[-2:]
    tok = torch.cat([sd["encoder.cls_token"].expand(b, -1, -1), tok.flatten(2).transpose(1, 2)], 1)
    tok = tok + sd["encoder.pos_embed"]
    for i in range(DEPTH):
        tok = _block(tok, sd, f"encoder.blocks.{i}", HEADS, symmetric)
    patches = _ln(tok, sd, "encoder.norm")[:, 1:]
    if decoder == "linear":
        masks = patches @ sd["decoder.head.weight"].T + sd["decoder.head.bias"]
    else:
        z = torch.cat([patches @ sd["decoder.proj_dec.weight"].T + sd["decoder.proj_dec.bias"],
                       sd["decoder.cls_emb"].expand(b, -1, -1)], 1)
        for i in range(DEC_LAYERS):
            z = _block(z, sd, f"decoder.blocks.{i}", D // 64, False)
        z = _ln(z, sd, "decoder.decoder_norm")
        p = z[:, :-N_CLS] @ sd["decoder.proj_patch"]
        c = z[:, -N_CLS:] @ sd["decoder.proj_classes"]
        p, c = p / p.norm(dim=-1, keepdim=True), c / c.norm(dim=-1, keepdim=True)
        masks = _ln(p @ c.transpose(1, 2), sd, "decoder.mask_norm")
    masks = masks.transpose(1, 2).reshape(b, -1, *grid)
    return F.interpolate(masks, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


def write_segmenter(folder: pathlib.Path, sd: dict, decoder: str, normalization: str = "vit",
                    extra: dict | None = None) -> pathlib.Path:
    """Write checkpoint.pth and variant.yml as Segmenter's train.py does."""
    folder.mkdir(parents=True, exist_ok=True)
    dec = {"name": "mask_transformer", "drop_path_rate": 0.0, "dropout": 0.1, "n_layers": DEC_LAYERS} \
        if decoder == "mask" else {"name": "linear"}
    variant = {
        "world_batch_size": 8, "version": "normal", "resume": True,
        "dataset_kwargs": {"dataset": "ade20k", "image_size": 48, "crop_size": WINDOW, "batch_size": 8,
                           "normalization": normalization, "split": "train", "num_workers": 10},
        "net_kwargs": {"backbone": "vit_tiny_patch16_384", "d_model": D, "n_heads": HEADS, "n_layers": DEPTH,
                       "patch_size": PATCH, "image_size": (WINDOW, WINDOW), "normalization": normalization,
                       "distilled": False, "dropout": 0.0, "drop_path_rate": 0.1, "decoder": dec, "n_cls": N_CLS},
        "inference_kwargs": {"im_size": 48, "window_size": WINDOW, "window_stride": WINDOW},
    }
    (folder / "variant.yml").write_text(yaml.dump(variant))  # tuples become !!python/tuple, as in Segmenter's
    torch.save({"model": sd, "epoch": 3, "n_cls": N_CLS, **(extra or {})}, folder / "checkpoint.pth")
    return folder / "checkpoint.pth"


@pytest.mark.parametrize(("name", "symmetric", "decoder"), [
    ("segmenter_vit_tiny_mask", False, "mask"),
    ("segmenter_symvit_tiny_mask", True, "mask"),
    ("segmenter_vit_tiny_linear", False, "linear"),
    ("segmenter_symvit_small_linear", True, "linear"),
])
def test_segmenter_checkpoint_matches_the_recomputation(tmp_path, name, symmetric, decoder):
    sd = segmenter_state(symmetric, decoder)
    path = write_segmenter(tmp_path / "run", sd, decoder)
    model = load_segmentation_model(name, str(path))
    x = torch.rand(2, 3, WINDOW, WINDOW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
    assert ours.shape == (2, N_CLS, WINDOW, WINDOW)
    torch.testing.assert_close(ours, reference_logits(sd, x, symmetric, decoder), rtol=1e-4, atol=1e-4)
    ident = model.identity()
    assert ident["normalization"]["name"] == "vit" and ident["normalization"]["mean"] == [0.5] * 3
    assert (model.window, model.stride, model.image_size, model.num_classes) == (WINDOW, WINDOW, 48, N_CLS)
    assert ident["checkpoint_sha256"] and ident["architecture"]["n_heads"] == HEADS
    # the folder works as well, and the deit normalization is ImageNet's mean / std
    path = write_segmenter(tmp_path / "deit", sd, decoder, normalization="deit")
    model = load_segmentation_model(name, str(path.parent))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_logits(sd, x, symmetric, decoder, mean, std),
                                   rtol=1e-4, atol=1e-4)


def test_sliding_window_and_resize_follow_segmenters_evaluation(tmp_path):
    sd = segmenter_state(True, "mask")
    path = write_segmenter(tmp_path, sd, "mask")
    model = load_segmentation_model("segmenter_symvit_tiny_mask", str(path), stride=16)
    x = torch.rand(1, 3, WINDOW, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
        left = reference_logits(sd, x[..., :32], True, "mask")
        right = reference_logits(sd, x[..., 16:], True, "mask")
    expected = torch.zeros(1, N_CLS, WINDOW, 48)
    expected[..., :16] = left[..., :16]
    expected[..., 16:32] = (left[..., 16:] + right[..., :16]) / 2
    expected[..., 32:] = right[..., 16:]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    small = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))  # upsampled to the window
    with torch.no_grad():
        up = F.interpolate(small, size=(WINDOW, WINDOW), mode="bilinear", align_corners=False)
        expected = F.interpolate(reference_logits(sd, up, True, "mask"), size=(24, 24), mode="bilinear",
                                 align_corners=False)
        torch.testing.assert_close(model(small), expected, rtol=1e-4, atol=1e-4)


def test_rpc_options_reach_the_encoder(tmp_path):
    path = write_segmenter(tmp_path, segmenter_state(True, "mask"), "mask")
    model = load_segmentation_model("segmenter_rpc_symvit_tiny_mask", str(path), rpc_iters=2, rpc_layers="all")
    assert model.identity()["rpc"] == "PAP n=2 lambda=4 in blocks [0, 1] (code threshold)"
    plain = load_segmentation_model("segmenter_symvit_tiny_mask", str(path))
    x = torch.rand(1, 3, WINDOW, WINDOW)
    with torch.no_grad():
        assert not torch.allclose(model(x), plain(x))
    with pytest.raises(UserError, match="plain symmetric attention.*segmenter_rpc_symvit_tiny_mask"):
        load_segmentation_model("segmenter_symvit_tiny_mask", str(path), rpc_iters=2)
    with pytest.raises(UserError, match="rpc_iters must be an integer"):
        load_segmentation_model("segmenter_rpc_symvit_tiny_mask", str(path), rpc_iters=0)


def test_wrong_checkpoints_get_one_sentence(tmp_path):
    flat = {"head.weight": torch.zeros(1000, D), "head.bias": torch.zeros(1000),
            "patch_embed.proj.weight": torch.zeros(D, 3, PATCH, PATCH)}
    torch.save({"model": flat}, tmp_path / "cls.pth")
    with pytest.raises(UserError, match=r"classification checkpoint \(a head.weight of \[1000, 64\]"):
        load_segmentation_model("segmenter_symvit_tiny_mask", str(tmp_path / "cls.pth"))
    path = write_segmenter(tmp_path / "vit", segmenter_state(False, "mask"), "mask")
    with pytest.raises(UserError, match=r"standard ViT encoder \(qkv \[3D, D\]\).*segmenter_vit_tiny_mask"):
        load_segmentation_model("segmenter_symvit_tiny_mask", str(path))
    with pytest.raises(UserError, match="mask decoder.*segmenter_vit_tiny_mask"):
        load_segmentation_model("segmenter_vit_tiny_linear", str(path))
    with pytest.raises(UserError, match="segments 5 classes but 7"):
        load_segmentation_model("segmenter_vit_tiny_mask", str(path), num_classes=7)
    (tmp_path / "vit" / "variant.yml").unlink()
    with pytest.raises(UserError, match="no variant.yml beside it"):
        load_segmentation_model("segmenter_vit_tiny_mask", str(path))
    unsafe = write_segmenter(tmp_path / "unsafe", segmenter_state(False, "mask"), "mask",
                             extra={"log_dir": pathlib.PurePosixPath("logs")})
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_segmentation_model("segmenter_vit_tiny_mask", str(unsafe))
    assert load_segmentation_model("segmenter_vit_tiny_mask", str(unsafe), trust_checkpoint=True).num_classes == 5
    with pytest.raises(UserError, match="Unknown segmentation model 'segmenter_symvit_tiny_masks'.*did you mean"):
        load_segmentation_model("segmenter_symvit_tiny_masks")


def test_safetensors_round_trip_keeps_config_and_pap(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = load_segmentation_model("segmenter_rpc_symvit_digits", shipped_weights=False, rpc_iters=3)
    state = {k: v.contiguous() for k, v in model.segmenter.state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"), metadata=config_metadata(model, {"epochs": 1}))
    again = load_segmentation_model("segmenter_rpc_symvit_digits", str(tmp_path / "m.safetensors"))
    assert again.identity()["rpc"] == model.identity()["rpc"] == "PAP n=3 lambda=4 in blocks [0] (code threshold)"
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_names_and_models_list(capsys):
    from clirun import run_cli

    assert is_segmentation_model("segmenter_rpc_symvit_tiny_mask")
    assert not is_segmentation_model("symvit_tiny_patch16_224")
    for name in ("segmenter_symvit_tiny_mask", "segmenter_rpc_symvit_base_linear", "segmenter_vit_small_mask",
                 "segmenter_symvit_digits", "segmenter_rpc_symvit_digits"):
        assert name in SEGMENTATION_MODELS
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert code == 0
    import json

    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["segmenter_rpc_symvit_tiny_mask"]["task"] == "segmentation"
    assert rows["symvit_tiny_patch16_224"]["task"] == "classification"
    assert rows["segmenter_symvit_digits"]["params"] > 0


def test_demo_training_is_deterministic(tmp_path):
    from dataclasses import replace

    from robustbench_rpc.demo.train_segmentation import (
        SegTrainConfig,
        save_segmenter_checkpoint,
        train_digit_segmenter,
    )

    config = replace(SegTrainConfig(), epochs=1, train_scenes=16, batch_size=8)
    paths = []
    for run in range(2):
        model, summary = train_digit_segmenter("rpc_symvit", config)
        paths.append(tmp_path / f"run{run}.safetensors")
        save_segmenter_checkpoint(model, paths[-1], summary)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = load_segmentation_model("segmenter_rpc_symvit_digits", str(paths[0]))
    assert loaded.identity()["rpc"] == "PAP n=4 lambda=4 in blocks [0] (code threshold)"
    assert summary["train_samples"] == 16 and summary["test_samples"] == 200


@pytest.mark.parametrize("name", ["segmenter_symvit_digits", "segmenter_rpc_symvit_digits"])
def test_shipped_segmenters_load_by_default_and_score_as_recorded(name):
    import json

    from safetensors import safe_open

    from robustbench_rpc.demo.train_segmentation import digit_scene_tensors, segmentation_scores
    from robustbench_rpc.models.segmentation import shipped_segmentation_checkpoint

    path = shipped_segmentation_checkpoint(name)
    assert path is not None and path.stat().st_size < 2_000_000
    model = load_segmentation_model(name)
    assert model.checkpoint == str(path) and model.checkpoint_sha256
    with safe_open(str(path), "pt") as handle:
        recorded = json.loads(handle.metadata()[CONFIG_KEY])["summary"]["test"]
    images, masks = digit_scene_tensors("test")
    scores = segmentation_scores(model, images, masks)
    assert scores == pytest.approx(recorded, abs=0.05)  # threads may break a rare argmax tie otherwise
    assert recorded["mIoU"] > 30
    random = load_segmentation_model(name, shipped_weights=False)
    assert random.checkpoint is None


def test_models_info_describes_a_segmentation_model(capsys):
    import json

    from clirun import run_cli

    code, out, _ = run_cli(capsys, "models", "info", "segmenter_rpc_symvit_digits", "--rpc-iters", "2", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["task"] == "segmentation" and info["rpc"].startswith("PAP n=2")
    assert info["window"] == 64 and info["num_classes"] == 11


def test_demo_train_task_is_checked(capsys):
    from clirun import run_cli

    code, _, err = run_cli(capsys, "demo", "train", "--task", "detection")
    assert code != 0 and "--task must be classification or segmentation, got 'detection'" in err
    code, _, err = run_cli(capsys, "demo", "train", "--task", "segmentation", "--epochs", "0")
    assert code != 0 and "--epochs must be >= 1, got 0" in err
