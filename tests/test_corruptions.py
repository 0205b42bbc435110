from __future__ import annotations

import colorsys
import io
import itertools

import numpy as np
import pytest
import torch
from datagen import smooth_images
from PIL import Image

from robustbench_rpc.corruptions import (
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITY_TABLES,
    STANDARD_CORRUPTIONS,
    corrupt,
    jpeg_roundtrip,
)
from robustbench_rpc.corruptions.digital import (
    _jpeg_roundtrip_pillow,
    bilinear_symmetric,
    box_resample_matrix,
    nearest_indices,
)
from robustbench_rpc.corruptions.fidelity import DETERMINISTIC
from robustbench_rpc.corruptions.severity import severity_params
from robustbench_rpc.corruptions.weather import frost_images
from robustbench_rpc.errors import UserError

RANDOM = [n for n in CORRUPTIONS if n not in DETERMINISTIC]


def test_registry_names() -> None:
    assert len(STANDARD_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert list(CORRUPTIONS) == list(STANDARD_CORRUPTIONS) + list(EXTRA_CORRUPTIONS)
    assert set(SEVERITY_TABLES) == set(CORRUPTIONS)
    assert all(sorted(t) == [1, 2, 3, 4, 5] for t in SEVERITY_TABLES.values())
    assert SEVERITY_TABLES["gaussian_noise"][5] == {"std": 0.38}
    assert SEVERITY_TABLES["jpeg_compression"][1] == {"quality": 25}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_severity_keeps_dtype_shape_range(name: str) -> None:
    x = smooth_images(2, 32)
    x8 = (x * 255).round().to(torch.uint8)
    for sev in range(1, 6):
        gen = torch.Generator().manual_seed(sev)
        y = corrupt(x, name, sev, gen)
        assert y.shape == x.shape and y.dtype == torch.float32 and y.device == x.device
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        y8 = corrupt(x8, name, sev, gen)
        assert y8.shape == x8.shape and y8.dtype == torch.uint8
    # float64 and float16 come back in their own dtype
    assert corrupt(x.double(), name, 3, torch.Generator().manual_seed(0)).dtype == torch.float64
    assert corrupt(x.half(), name, 3, torch.Generator().manual_seed(0)).dtype == torch.float16


def test_non_square_and_larger_images() -> None:
    x = smooth_images(1, 96)[:, :, :80, :]  # 80 x 96
    for name in CORRUPTIONS:
        y = corrupt(x, name, 5, torch.Generator().manual_seed(1))
        assert y.shape == x.shape, name


@pytest.mark.parametrize("name", RANDOM)
def test_seed_reproduces_and_differs(name: str) -> None:
    x = smooth_images(2, 48)
    a = corrupt(x, name, 3, torch.Generator().manual_seed(7))
    b = corrupt(x, name, 3, torch.Generator().manual_seed(7))
    c = corrupt(x, name, 3, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the two images of a batch get different draws
    same = corrupt(x[:1].repeat(2, 1, 1, 1), name, 3, torch.Generator().manual_seed(7))
    assert not torch.equal(same[0], same[1])


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_ignore_the_seed(name: str) -> None:
    x = smooth_images(2, 40)
    a = corrupt(x, name, 4, torch.Generator().manual_seed(1))
    b = corrupt(x, name, 4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    # and each image is corrupted independently of the others in the batch
    assert torch.allclose(corrupt(x[1:], name, 4), a[1:], atol=1e-6)


# Not monotonic by design in ImageNet-C itself: glass_blur (severity 3 degrades more than 4), saturate
# (1-2 desaturate, 3-5 saturate), frost (a random overlay each time), snow, fog and spatter (parameters trade
# off against each other; spatter switches from water to mud at 4).
MONOTONIC = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "gaussian_blur",
    "zoom_blur",
    "motion_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
    "elastic_transform",
]


@pytest.mark.parametrize("name", MONOTONIC)
def test_degradation_grows_with_severity(name: str) -> None:
    x = smooth_images(4, 64, seed=3)
    if name == "jpeg_compression":  # needs real texture to be visible
        x = (x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    diffs = []
    for sev in range(1, 6):
        y = corrupt(x, name, sev, torch.Generator().manual_seed(11))
        diffs.append(float((y - x).abs().mean()))
    assert all(a < b for a, b in zip(diffs, diffs[1:], strict=False)), diffs


def test_contrast_and_brightness_against_closed_forms() -> None:
    x = smooth_images(2, 32)
    y = corrupt(x, "contrast", 2, None)
    m = x.mean((2, 3), keepdim=True)
    assert torch.allclose(y, ((x - m) * 0.3 + m).clamp(0, 1), atol=1e-6)
    px = x[0, :, 3, 5].tolist()
    h, s, v = colorsys.rgb_to_hsv(*px)
    want = colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))
    got = corrupt(x, "brightness", 3, None)[0, :, 3, 5]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float32), atol=1e-5)
    h, s, v = colorsys.rgb_to_hsv(*px)
    want = colorsys.hsv_to_rgb(h, min(s * 5 + 0.1, 1.0), v)
    got = corrupt(x, "saturate", 4, None)[0, :, 3, 5]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float32), atol=1e-5)


def test_hsv_corruptions_equal_the_hsv_round_trip_on_every_pixel() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand((1, 3, 40, 40), generator=g)
    x[0, :, 0, :8] = torch.tensor([0.0, 0.3, 1.0, 0.5, 0.5, 0.0, 0.9, 0.2]).view(1, 8)  # greys, black, white
    x[0, :, 1, :3] = torch.tensor([[1.0, 0.2, 0.2], [0.4, 0.4, 0.1], [0.0, 0.0, 0.0]])  # ties, 0 next to 1
    pixels = x[0].permute(1, 2, 0).reshape(-1, 3).tolist()
    for sev in range(1, 6):
        p = severity_params("brightness", sev)
        got = corrupt(x, "brightness", sev, None)[0].permute(1, 2, 0).reshape(-1, 3)
        hsv = [colorsys.rgb_to_hsv(*q) for q in pixels]
        want = [colorsys.hsv_to_rgb(h, s, min(v + p["delta"], 1.0)) for h, s, v in hsv]
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float32), atol=2e-6)
        p = severity_params("saturate", sev)
        got = corrupt(x, "saturate", sev, None)[0].permute(1, 2, 0).reshape(-1, 3)
        want = [colorsys.hsv_to_rgb(h, min(max(s * p["scale"] + p["shift"], 0.0), 1.0), v) for h, s, v in hsv]
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float32), atol=2e-6)


def test_elastic_sampling_matches_map_coordinates_with_mirrored_borders() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand((2, 3, 11, 9), generator=g, dtype=torch.float64)
    yy = torch.arange(11.0).view(1, 11, 1) + (torch.rand((2, 11, 9), generator=g, dtype=torch.float64) - 0.5) * 9
    xx = torch.arange(9.0).view(1, 1, 9) + (torch.rand((2, 11, 9), generator=g, dtype=torch.float64) - 0.5) * 9
    got = bilinear_symmetric(x, yy, xx).numpy()

    def mirror(i: np.ndarray, n: int) -> np.ndarray:  # scipy "reflect": d c b a | a b c d | d c b a
        i = np.mod(i, 2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)

    xn, yn, xn_ = x.numpy(), yy.numpy(), xx.numpy()
    y0, x0 = np.floor(yn).astype(int), np.floor(xn_).astype(int)
    wy, wx = yn - y0, xn_ - x0
    for b in range(2):
        ya, yb, xa, xb = mirror(y0[b], 11), mirror(y0[b] + 1, 11), mirror(x0[b], 9), mirror(x0[b] + 1, 9)
        img = xn[b]
        want = (
            img[:, ya, xa] * (1 - wy[b]) * (1 - wx[b])
            + img[:, ya, xb] * (1 - wy[b]) * wx[b]
            + img[:, yb, xa] * wy[b] * (1 - wx[b])
            + img[:, yb, xb] * wy[b] * wx[b]
        )
        assert np.allclose(got[b], want, atol=1e-9)


def test_pixelate_matches_pillow_resampling() -> None:
    for n_in, n_out in [(224, 134), (224, 89), (37, 11)]:
        img = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
        pil = np.asarray(img.resize((n_out, n_in), Image.BOX))  # [n_in rows, n_out cols]
        assert np.allclose(box_resample_matrix(n_in, n_out).numpy().T, pil, atol=1e-6)
        rows = Image.fromarray(np.arange(n_out, dtype=np.float32)[None].repeat(2, 0), mode="F")
        up = np.asarray(rows.resize((n_in, 2), Image.NEAREST))[0]
        assert np.array_equal(nearest_indices(n_out, n_in, torch.device("cpu")).numpy(), up.astype(int))


def test_nearest_upsample_equals_pillow_on_both_routes() -> None:
    from robustbench_rpc.corruptions.digital import nearest_exact_is_pillow, nearest_upsample

    # (89, 224) and (67, 224) take torch's nearest-exact kernel; (28, 71) and (58, 97) are pairs where its
    # float32 scale picks other pixels than Pillow, so they take the index route
    pairs = [(89, 224), (67, 224), (28, 71), (58, 97)]
    assert [nearest_exact_is_pillow(a, b) for a, b in pairs] == [True, True, False, False]
    for (h0, h), (w0, w) in itertools.product(pairs, pairs[1:3]):
        small = torch.rand((1, 2, h0, w0), generator=torch.Generator().manual_seed(h0 + w0))
        got = nearest_upsample(small, h, w)
        for c in range(2):
            want = np.asarray(Image.fromarray(small[0, c].numpy(), mode="F").resize((w, h), Image.NEAREST))
            assert np.array_equal(got[0, c].numpy(), want), ((h0, h), (w0, w))
    # float64: torch's kernel computes its indices in float64 there, and picks other pixels for (40, 134)
    assert nearest_exact_is_pillow(40, 134)
    coded = torch.arange(40 * 40, dtype=torch.float64).view(1, 1, 40, 40)
    want = np.asarray(Image.fromarray(coded[0, 0].float().numpy(), mode="F").resize((134, 134), Image.NEAREST))
    assert np.array_equal(nearest_upsample(coded, 134, 134)[0, 0].numpy(), want)


@pytest.mark.parametrize("n_in, n_out", [(224, 112), (224, 134), (224, 89), (224, 67), (224, 56), (37, 22)])
def test_box_downsample_equals_pillows_box_weights(n_in: int, n_out: int) -> None:
    from robustbench_rpc.corruptions.digital import box_downsample

    x = torch.rand(2, 3, n_in, n_in, generator=torch.Generator().manual_seed(n_out), dtype=torch.float64)
    m = box_resample_matrix(n_in, n_out).double()
    expected = torch.einsum("ph,bchw,qw->bcpq", m, x, m)
    got = box_downsample(box_downsample(x, 2, n_out), 3, n_out)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)


def test_jpeg_roundtrip_is_byte_identical_to_pillow() -> None:
    x8 = (smooth_images(2, 64) * 255).round().to(torch.uint8)
    x8 = torch.cat(
        [x8, torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)]
    )
    for quality, (h, w) in [(15, (64, 64)), (85, (37, 53)), (58, (64, 48))]:
        part = x8[:, :, :h, :w]
        ours = jpeg_roundtrip(part, quality=quality)
        for i in range(part.shape[0]):
            buf = io.BytesIO()
            Image.fromarray(part[i].permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)
            ref = torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1)
            assert torch.equal(ours[i], ref), (quality, i)
    assert torch.equal(_jpeg_roundtrip_pillow(x8, 30), jpeg_roundtrip(x8, 30))
    assert jpeg_roundtrip(x8.float() / 255).dtype == torch.float32


def test_frost_assets_are_shipped() -> None:
    frosts = frost_images()
    assert len(frosts) == 6 and all(f.dtype == torch.uint8 and f.shape[0] == 3 for f in frosts)
    # The reference reads the overlays with cv2.imread (BGR) and turns the crop back to RGB before blending.
    from importlib import resources

    with resources.as_file(resources.files("robustbench_rpc") / "assets" / "frost" / "frost4.jpg") as path:
        rgb = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(frosts[3], rgb) and not torch.equal(frosts[3], rgb.flip(0))


def test_cpu_generator_gives_same_result_on_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    x = smooth_images(2, 64)
    x8 = (x * 255).round().to(torch.uint8)  # uint8 batches take their own paths for some corruptions
    for name, images in itertools.product(CORRUPTIONS, (x, x8.float() / 255)):  # continuous, and 8-bit levels
        a = corrupt(images, name, 3, torch.Generator().manual_seed(0))
        b = corrupt(images.cuda(), name, 3, torch.Generator().manual_seed(0)).cpu()
        assert (a - b).abs().max() < 1e-4, name  # the same draws: only float rounding differs
    for name in CORRUPTIONS:
        a = corrupt(x8, name, 3, torch.Generator().manual_seed(0)).float()
        b = corrupt(x8.cuda(), name, 3, torch.Generator().manual_seed(0)).cpu().float()
        # float rounding can move a value across a truncation step: one level, on a few percent of values at most
        assert (a - b).abs().max() <= 1 and (a != b).float().mean() < 0.1, name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gaussian_nosie", 1), "Unknown corruption 'gaussian_nosie' (did you mean 'gaussian_noise'"),
        (("fog", 0), "Severity 0 is out of range"),
        (("fog", 6), "Severity 6 is out of range"),
        (("fog", "3"), "Severity '3' is out of range"),
        (("fog", True), "Severity True is out of range"),
    ],
)
def test_bad_names_and_severities(args: tuple, message: str) -> None:
    with pytest.raises(UserError) as err:
        corrupt(smooth_images(1, 32), *args)
    assert message in str(err.value)
    if "Unknown" in message:
        assert "jpeg_compression" in str(err.value) and "saturate" in str(err.value)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(3, 32, 32), "shape [B, 3, H, W]"),
        (torch.zeros(1, 1, 32, 32), "shape [B, 3, H, W]"),
        (torch.zeros(1, 3, 16, 32), "at least 32 x 32"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.int32), "uint8 or floating point"),
        (torch.full((1, 3, 32, 32), 2.0), "in [0, 1]"),
        (torch.full((1, 3, 32, 32), -0.1), "in [0, 1]"),
        (torch.full((1, 3, 32, 32), float("nan")), "in [0, 1]"),
        (np.zeros((1, 3, 32, 32), dtype=np.uint8), "torch.Tensor"),
    ],
)
def test_bad_images(images: object, message: str) -> None:
    with pytest.raises(UserError) as err:
        corrupt(images, "fog", 1)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_spatter_distance_map_is_exact_euclidean_within_the_cap() -> None:
    from scipy.ndimage import distance_transform_edt

    from robustbench_rpc.corruptions.spatter import truncated_distance

    edges = torch.rand((2, 1, 50, 60), generator=torch.Generator().manual_seed(0)) < 0.01
    ours = truncated_distance(edges, limit=20)
    ref = [torch.from_numpy(distance_transform_edt(~edges[i, 0].numpy())).float() for i in range(2)]
    assert torch.allclose(ours, torch.stack(ref)[:, None].clamp(max=20), atol=1e-5)



@pytest.mark.parametrize("pad_h,pad_w", [(0, 3), (2, 0), (5, 7), (7, 7), (9, 2)])
def test_padding_modes_equal_numpy_pad(pad_h: int, pad_w: int) -> None:
    from robustbench_rpc.corruptions._common import pad2d

    x = torch.rand((2, 3, 7, 8), dtype=torch.float64, generator=torch.Generator().manual_seed(pad_h))
    for ours, numpy_mode in [("symmetric", "symmetric"), ("reflect101", "reflect"), ("replicate", "edge")]:
        if numpy_mode == "reflect" and (pad_h >= 7 or pad_w >= 8):
            continue  # numpy reflects more than once there; OpenCV's reflect-101 is only used for small pads
        want = np.pad(x.numpy(), ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)), mode=numpy_mode)
        assert np.array_equal(pad2d(x, pad_h, pad_w, ours).numpy(), want), ours


def test_filter2d_equals_a_direct_correlation() -> None:
    from robustbench_rpc.corruptions._common import filter2d, pad2d
    from robustbench_rpc.corruptions.blur import disk_kernel

    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, 3, 40, 50), dtype=torch.float64, generator=g)
    kernels = [torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]]), torch.rand((5, 5), generator=g),
               torch.rand((7, 5), generator=g), disk_kernel(4, 0.5)]  # shifted sums (3 sizes), FFT
    for kernel in kernels:
        for mode in ("reflect101", "replicate"):
            kh, kw = kernel.shape
            xp = pad2d(x, kh // 2, kw // 2, mode)
            want = torch.nn.functional.conv2d(xp.reshape(6, 1, *xp.shape[-2:]), kernel.double()[None, None])
            assert torch.allclose(filter2d(x, kernel, mode), want.reshape(x.shape), atol=1e-5), (kernel.shape, mode)


def test_canny_equals_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    from robustbench_rpc.corruptions._common import gaussian_filter
    from robustbench_rpc.corruptions.spatter import canny

    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        field = gaussian_filter(torch.randn((1, 1, 60, 70), generator=g) * 0.3 + 0.5, 2.0)
        img8 = torch.floor(field * 255).clamp(0, 255)
        want = cv2.Canny(img8[0, 0].numpy().astype(np.uint8), 50, 150) > 0
        assert np.array_equal(canny(img8, 50, 150)[0, 0].numpy(), want)


def test_gpu_generator_draws_on_the_gpu_in_large_chunks_and_is_reproducible() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    from robustbench_rpc.corruptions.api import chunk_size

    x = smooth_images(40, 96).cuda()
    assert chunk_size(x.shape, torch.device("cuda")) >= 40 > chunk_size(x.shape, torch.device("cpu"))
    for name, images in itertools.product(CORRUPTIONS, (x, (x * 255).round().to(torch.uint8))):
        a = corrupt(images, name, 3, torch.Generator("cuda").manual_seed(1))
        b = corrupt(images, name, 3, torch.Generator("cuda").manual_seed(1))
        assert a.device.type == "cuda" and a.dtype == images.dtype and torch.equal(a, b), name
