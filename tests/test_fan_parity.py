"""FAN, FAN-Hybrid, symmetric FAN and RPC-FAN reproduce the official implementations on the parity fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import robustbench_rpc
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.checkpoint import read_checkpoint
from robustbench_rpc.models.fan import infer_fan_config

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FAMILIES = ("fan", "rpc_fan", "fan_hybrid")
CASES = [c for c in MANIFEST["cases"] if c["family"] in FAMILIES and (FIXTURES / c["checkpoint"]).exists()]
IDS = [c["case"] for c in CASES]
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
CONFIG_KEYS = (
    "img_size",
    "patch_size",
    "in_chans",
    "num_classes",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "eta",
    "tokens_norm",
    "cls_attn_layers",
    "use_pos_embed",
    "hybrid_patch_size",
)


def model_for(case: dict) -> tuple[str, dict]:
    """Map a case's official constructor arguments onto our model name and keyword options."""
    args = case["constructor_args"]
    kwargs = {k: args[k] for k in CONFIG_KEYS if k in args}
    if args.get("c_head_num"):
        kwargs["channel_heads"] = args["c_head_num"][0]
    if case["family"] == "fan_hybrid":
        backbone = case["constructor_non_json_args"]["backbone"]["kwargs"]
        kwargs["backbone_depths"] = list(backbone["depths"])
        kwargs["backbone_dims"] = list(backbone["dims"][: len(backbone["depths"])])
        return "fan_tiny_8_p4_hybrid", kwargs
    if case["family"] == "fan":
        return "fan_tiny_12_p16_224", kwargs
    kwargs.pop("hybrid_patch_size", None)
    pap = case["pap"]
    if not pap["robust"]:
        return "symfan_tiny_12_p16_224", kwargs
    layers = "all" if pap["layer"] < 0 else [pap["layer"]]
    kwargs.update(rpc_iters=pap["n"], rpc_lambda=pap["lambd"], rpc_layers=layers)
    return "rpc_fan_tiny_12_p16_224", kwargs


def loaded_model(case: dict) -> torch.nn.Module:
    """The case's model (eval mode, float32) with the case's checkpoint loaded strictly."""
    name, kwargs = model_for(case)
    model = timm.create_model(name, **kwargs).eval()
    model.load_state_dict(checkpoint_of(case).state_dict, strict=True)
    return model


def float32_tolerance(case: dict, key: str) -> float:
    """1e-4 for the logits; for hooked intermediates 1e-4 plus twice the official float32 run's own error.

    Intermediates before the final norm reach |x| ~ 10-15 and, inside PAP, the official float32 numbers are
    themselves ~1e-4 away from the float64 ones (the manifest records it), so a bare 1e-4 would test rounding
    noise, not the model. Ours may be as far from the exact result on the other side: |ours - official| <=
    |ours - exact| + |official - exact|, hence twice (on another machine's CPU a SymViT PAP output reached 1.7
    times the official error).
    """
    if key in ("logits", "logits_ema"):
        return TOLERANCE["float32"]
    return TOLERANCE["float32"] + 2 * case["float32_vs_float64"].get(key, {}).get("max_abs", 0.0)


def capture(model: torch.nn.Module, case: dict, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the model and collect the manifest's hooked tensors (module input or output, tuple element if any)."""
    out: dict[str, torch.Tensor] = {}

    def keep(key: str, value: object, index: int | None) -> None:
        out[key] = value[index or 0] if isinstance(value, tuple) else value

    handles = []
    for hook in case["hooks"]:
        module = model.get_submodule(hook["module"])
        if hook["io"] == "input":
            fn = lambda m, a, h=hook: keep(h["key"], a, 0)  # noqa: E731
            handles.append(module.register_forward_pre_hook(fn))
        else:
            fn = lambda m, a, r, h=hook: keep(h["key"], r, h["tuple_index"])  # noqa: E731
            handles.append(module.register_forward_hook(fn))
    out["logits"] = model(images)
    for handle in handles:
        handle.remove()
    return out


_CHECKPOINTS: dict[str, object] = {}


def checkpoint_of(case: dict):
    if case["checkpoint"] not in _CHECKPOINTS:
        _CHECKPOINTS[case["checkpoint"]] = read_checkpoint(FIXTURES / case["checkpoint"])
    return _CHECKPOINTS[case["checkpoint"]]


def test_fan_and_rpc_fan_have_cases():
    assert {"fan", "rpc_fan"} <= {c["family"] for c in CASES}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logits_and_intermediates_match_official(case, dtype):
    name, kwargs = model_for(case)
    ckpt = checkpoint_of(case)
    model = timm.create_model(name, **kwargs).eval()
    model.load_state_dict(ckpt.state_dict, strict=True)
    images = torch.load(FIXTURES / case["inputs"], weights_only=True)["images"]
    expected = torch.load(FIXTURES / case["outputs"][dtype], weights_only=True)
    assert set(expected) == set(case["output_keys"])
    if dtype == "float64":
        model, images = model.double(), images.double()
    with torch.no_grad():
        got = capture(model, case, images)
        if "logits_ema" in expected:
            model.load_state_dict(ckpt.ema_state_dict, strict=True)
            got["logits_ema"] = model(images)
    for key, want in expected.items():
        tol = TOLERANCE["float64"] if dtype == "float64" else float32_tolerance(case, key)
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        diff = (got[key] - want).abs().max().item()
        assert diff <= tol, f"{case['case']} {dtype} {key}: max abs diff {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_logits_are_within_1e4_of_exact(case):
    model = loaded_model(case)
    images = torch.load(FIXTURES / case["inputs"], weights_only=True)["images"]
    exact = torch.load(FIXTURES / case["outputs"]["float64"], weights_only=True)["logits"]
    with torch.no_grad():
        logits = model(images)
    assert (logits.double() - exact).abs().max().item() <= 1e-4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_is_read_off_the_checkpoint(case):
    """Width, depth, heads (from the temperature's shape), MLP ratio, stem and head size come from the weights."""
    _, kwargs = model_for(case)
    inferred = infer_fan_config(checkpoint_of(case).state_dict)
    for key in ("embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes", "cls_attn_layers", "qkv_bias"):
        assert inferred[key] == kwargs[key], key
    if case["family"] == "fan_hybrid":
        assert inferred["backbone_depths"] == kwargs["backbone_depths"]
        assert inferred["backbone_dims"] == kwargs["backbone_dims"]
        assert inferred["hybrid_patch_size"] == kwargs["hybrid_patch_size"]
    else:
        assert inferred["patch_size"] == kwargs["patch_size"]
        assert "backbone_depths" not in inferred


FIRST_CASE = {}
for _case in CASES:
    FIRST_CASE.setdefault(_case["family"], _case)
LOAD_CASES = [c for c in CASES if c["pap"]["robust"]] + [
    FIRST_CASE[f] for f in ("fan", "fan_hybrid") if f in FIRST_CASE
]


@pytest.mark.parametrize("case", LOAD_CASES, ids=[c["case"] for c in LOAD_CASES])
def test_load_model_takes_pixels_and_reproduces_logits(case):
    name, kwargs = model_for(case)
    rpc_options = {k: v for k, v in kwargs.items() if k.startswith("rpc_")}
    model = robustbench_rpc.load_model(name, str(FIXTURES / case["checkpoint"]), **rpc_options)
    inputs = torch.load(FIXTURES / case["inputs"], weights_only=True)
    pixels = inputs["pixels_u8"].float() / 255
    expected = torch.load(FIXTURES / case["outputs"]["float32"], weights_only=True)["logits"]
    with torch.no_grad():
        logits = model(pixels)
    assert (logits - expected).abs().max().item() <= 1e-4
    prep = model.preprocessing
    assert prep["input_size"] == (3, 224, 224)
    assert prep["crop_pct"] == 1.0
    assert prep["interpolation"] == "bicubic"
    assert tuple(prep["mean"]) == pytest.approx((0.485, 0.456, 0.406))
    assert model.info.checkpoint_sha256 == MANIFEST["families"][case["family"]]["checkpoint"]["sha256"]
    if name.startswith("rpc_"):
        assert model.info.rpc.startswith(f"PAP n={case['pap']['n']} lambda={case['pap']['lambd']:g} in blocks")


def test_rpc_fan_defaults_are_the_papers():
    """rpc_fan_* without options: PAP in the first block only, 4 attention evaluations, lambda 4."""
    case = next(c for c in CASES if c["family"] == "rpc_fan" and c["pap"]["robust"])
    model = robustbench_rpc.load_model("rpc_fan_tiny_12_p16_224", str(FIXTURES / case["checkpoint"]))
    blocks = model.model.blocks
    assert blocks[0].attn.rpc is not None and blocks[0].attn.rpc.iters == 4 and blocks[0].attn.rpc.lam == 4.0
    assert all(b.attn.rpc is None for b in blocks[1:])
    sym = robustbench_rpc.load_model("symfan_tiny_12_p16_224", str(FIXTURES / case["checkpoint"]))
    assert all(b.attn.rpc is None for b in sym.model.blocks) and sym.info.rpc == "off"
    every = robustbench_rpc.load_model(
        "rpc_fan_tiny_12_p16_224", str(FIXTURES / case["checkpoint"]), rpc_layers="all", rpc_iters=2
    )
    assert all(b.attn.rpc is not None and b.attn.rpc.iters == 2 for b in every.model.blocks)


def test_ema_weights_are_selectable():
    case = next(c for c in CASES if c["family"] == "rpc_fan" and not c["pap"]["robust"])
    expected = torch.load(FIXTURES / case["outputs"]["float32"], weights_only=True)
    path = str(FIXTURES / case["checkpoint"])
    images = torch.load(FIXTURES / case["inputs"], weights_only=True)["images"]
    main = robustbench_rpc.load_model("symfan_tiny_12_p16_224", path)
    ema = robustbench_rpc.load_model("symfan_tiny_12_p16_224", path, use_ema=True)
    with torch.no_grad():
        logits_main, logits_ema = main.model(images), ema.model(images)
    assert (logits_ema - expected["logits_ema"]).abs().max().item() <= 1e-4
    assert (logits_main - expected["logits"]).abs().max().item() <= 1e-4
    assert (logits_ema - logits_main).abs().max().item() > 1e-2
    assert ema.info.use_ema


FAN_CHECKPOINT = str(FIXTURES / "fan" / "fan_vit_parity.pth.tar")


def test_flat_fan_checkpoint_has_no_ema():
    with pytest.raises(UserError, match="no EMA weights"):
        robustbench_rpc.load_model("fan_tiny_12_p16_224", FAN_CHECKPOINT, use_ema=True)


@pytest.mark.parametrize(
    "name,checkpoint,suggested",
    [
        ("fan_tiny_12_p16_224", "symvit/symvit_parity_checkpoint.pth", "symvit_tiny_patch16_224"),
        ("symvit_tiny_patch16_224", "fan/fan_vit_parity.pth.tar", "fan_tiny_12_p16_224"),
        ("fan_tiny_12_p16_224", "fan_hybrid/fan_hybrid_parity.pth.tar", "fan_tiny_8_p4_hybrid"),
        ("fan_tiny_8_p4_hybrid", "fan/fan_vit_parity.pth.tar", "fan_tiny_12_p16_224"),
        ("rpc_fan_tiny_12_p16_224", "fan/fan_vit_parity.pth.tar", "fan_tiny_12_p16_224"),
        ("symfan_tiny_12_p16_224", "fan/fan_vit_parity.pth.tar", "fan_tiny_12_p16_224"),
        ("fan_tiny_12_p16_224", "rpc_fan/model_best.pth.tar", "rpc_fan_tiny_12_p16_224"),
    ],
)
def test_checkpoint_of_another_family_names_the_right_model(name, checkpoint, suggested):
    path = FIXTURES / checkpoint
    if not path.exists():
        pytest.skip(f"{checkpoint} not in the fixtures")
    with pytest.raises(UserError) as err:
        robustbench_rpc.load_model(name, str(path))
    message = str(err.value)
    assert suggested in message and name in message
    assert "\n" not in message


def test_rpc_options_on_plain_names_are_refused():
    with pytest.raises(UserError, match="rpc_fan_tiny_12_p16_224"):
        timm.create_model("fan_tiny_12_p16_224", rpc_iters=2)
    with pytest.raises(UserError, match="rpc_fan_small_12_p16_224"):
        timm.create_model("symfan_small_12_p16_224", rpc_lambda=1.0)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="embed_dim"):
        timm.create_model("fan_tiny_12_p16_224", embed_dimm=64)
    with pytest.raises(UserError, match="out of range"):
        timm.create_model("rpc_fan_tiny_12_p16_224", depth=2, embed_dim=64, rpc_layers=[3])
    with pytest.raises(UserError, match="hybrid"):
        timm.create_model("fan_tiny_12_p16_224", backbone_depths=[1, 1])
    with pytest.raises(UserError, match="patch_size"):
        timm.create_model("fan_tiny_12_p16_224", patch_size=32, img_size=64)


def test_hybrid_layernorm_keeps_the_official_memory_layout_quirk():
    """Contiguous input: biased variance (``layer_norm``); any other layout (the channels-last output of a CPU
    depthwise conv): the unbiased variance, as the official stem computes it."""
    from robustbench_rpc.models.fan_hybrid import LayerNorm2d

    norm = LayerNorm2d(8).double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    biased = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-6)
    unbiased = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=True, keepdim=True) + 1e-6)
    with torch.no_grad():
        assert torch.allclose(norm(x), biased, atol=1e-12)
        assert torch.allclose(norm(x.contiguous(memory_format=torch.channels_last)), unbiased, atol=1e-12)


def _layernorm_layouts(run, monkeypatch) -> tuple[torch.Tensor, list[bool]]:
    """``run()``'s result, and whether each hybrid LayerNorm2d input it made was contiguous, in call order."""
    from robustbench_rpc.models.fan_hybrid import LayerNorm2d

    original, seen = LayerNorm2d.forward, []

    def recording(self, x):
        seen.append(x.is_contiguous())
        return original(self, x)

    with monkeypatch.context() as patch, torch.no_grad():
        patch.setattr(LayerNorm2d, "forward", recording)
        return run(), seen


def _logits_with_layernorm_layouts(case: dict, images: torch.Tensor, layouts: list[bool], monkeypatch):
    """CPU float64 logits with the k-th hybrid LayerNorm2d input made contiguous or channels-last as
    ``layouts[k]`` says: the official code's numbers for the memory layouts another device produced."""
    from robustbench_rpc.models.fan_hybrid import LayerNorm2d

    original, calls = LayerNorm2d.forward, iter(layouts)

    def replaying(self, x):
        layout = torch.contiguous_format if next(calls) else torch.channels_last
        return original(self, x.contiguous(memory_format=layout))

    with monkeypatch.context() as patch, torch.no_grad():
        patch.setattr(LayerNorm2d, "forward", replaying)
        return loaded_model(case).double()(images.double())


@pytest.mark.parametrize("case", [c for c in CASES if c["family"] == "fan_hybrid"], ids=lambda c: c["case"])
def test_layernorm_layout_replay_reproduces_the_fixture_and_the_gpu_layout(case, monkeypatch):
    """The replay the CUDA test uses: the CPU's own layouts give the fixture; all-contiguous inputs (what a GPU
    float64 run gives) move the logits by the 0.0549 measured on an H200."""
    images = torch.load(FIXTURES / case["inputs"], weights_only=True)["images"]
    exact = torch.load(FIXTURES / case["outputs"]["float64"], weights_only=True)["logits"]
    model = loaded_model(case).double()
    logits, layouts = _layernorm_layouts(lambda: model(images.double()), monkeypatch)
    assert layouts and not all(layouts)  # CPU depthwise convs return channels-last memory
    assert (_logits_with_layernorm_layouts(case, images, layouts, monkeypatch) - exact).abs().max() <= 1e-9
    moved = _logits_with_layernorm_layouts(case, images, [True] * len(layouts), monkeypatch)
    assert abs((moved - exact).abs().max().item() - 0.0549054021588) < 1e-9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_logits_match_official(case, monkeypatch):
    """On a GPU: float64 logits within 1e-9 of the official float64, float32 (TF32 off) within 1e-4 of exact.

    FAN-Hybrid: the official stem's LayerNorm2d takes the biased variance for contiguous input and the unbiased
    one otherwise (see the test above). Which layout a depthwise conv returns depends on the device and the dtype
    (on the CPU, channels-last; on an H200, contiguous in float64 and channels-last in float32), so the official
    code, and this model, compute other numbers there (0.055 in the logits). The reference is then the CPU
    float64 run with each LayerNorm2d input in the layout the GPU run gave it.
    """
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = loaded_model(case)
    images = torch.load(FIXTURES / case["inputs"], weights_only=True)["images"]
    exact32 = exact64 = torch.load(FIXTURES / case["outputs"]["float64"], weights_only=True)["logits"]
    logits32, layouts32 = _layernorm_layouts(lambda: model.cuda()(images.cuda()).cpu(), monkeypatch)
    logits64, layouts64 = _layernorm_layouts(lambda: model.double()(images.double().cuda()).cpu(), monkeypatch)
    if case["family"] == "fan_hybrid":
        assert layouts32 and layouts64
        exact32 = _logits_with_layernorm_layouts(case, images, layouts32, monkeypatch)
        exact64 = _logits_with_layernorm_layouts(case, images, layouts64, monkeypatch)
    assert (logits64 - exact64).abs().max().item() <= TOLERANCE["float64"]
    assert (logits32.double() - exact32).abs().max().item() <= 1e-4
