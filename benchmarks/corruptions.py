"""Throughput of the corruptions at severity 3 on 224 x 224 images: ours (batched torch) vs the reference
`imagecorruptions` per-image loop, in the same process on the same machine.

Usage: python benchmarks/corruptions.py [--batch 32] [--ref-images 16] [--threads N] [--device cpu] [--rounds 3]
Prints images/s for each corruption, the ratio ours/reference, and the 15-corruption sweep (each figure the
fastest of its rounds, and the sweep of each round). Both sides use the
machine's cores by default (torch intra-op threads for ours; the reference's OpenCV calls are multi-threaded and
its numpy ones are not). Glass blur is also timed against the reference's pixel loop run as plain Python, which is
how ImageNet-C's original code ran it (the reference compiles that loop with numba).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def images_224(n: int, seed: int = 0):
    """Real images (prepared as ImageNet-C) when ../shared/data is there, else smooth random images."""
    import torch

    data = ROOT.parent / "shared" / "data" / "imagenet-val-100"
    if data.is_dir():
        from robustbench_rpc.corruptions.fidelity import load_folder

        imgs = load_folder(data, n)
        if imgs.shape[0] < n:
            imgs = imgs.repeat((n + imgs.shape[0] - 1) // imgs.shape[0], 1, 1, 1)[:n]
        return imgs
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, 16, 16), generator=g)
    return (torch.nn.functional.interpolate(coarse, size=224, mode="bicubic").clamp(0, 1) * 255).to(
        torch.uint8
    )


def timed(fn, min_time: float = 0.5, min_calls: int = 5) -> float:
    """Seconds of the fastest call of ``fn`` (after one warm-up call) over at least ``min_calls`` calls and
    ``min_time`` seconds: on a shared machine the minimum is the least disturbed measurement (as timeit does)."""
    fn()
    best, calls, t0 = float("inf"), 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_time:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        calls += 1
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32, help="images per call of ours")
    parser.add_argument("--ref-images", type=int, default=16, help="images per timing of the reference loop (0: "
                        "ours only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corruptions", default="all")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per corruption and side, "
                        "in each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all corruptions, ours and the "
                        "reference interleaved; each figure is the fastest of its rounds (a shared machine's load "
                        "comes and goes)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--generator", choices=("cpu", "device"), default="cpu",
                        help="where ours draws its random numbers: a CPU generator (what evaluation uses: the same "
                        "images on every device) or one on --device")
    args = parser.parse_args()
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from robustbench_rpc.corruptions import CORRUPTIONS, STANDARD_CORRUPTIONS, corrupt

    try:
        from imagecorruptions import corrupt as ref_corrupt
    except ImportError:
        ref_corrupt = None
        print("reference imagecorruptions not installed: only our throughput is printed")
    if args.ref_images < 1:
        ref_corrupt = None
    names = list(CORRUPTIONS) if args.corruptions == "all" else args.corruptions.split(",")
    batch = images_224(args.batch)
    dev_batch = batch.to(args.device)
    ref_imgs = [img.permute(1, 2, 0).numpy() for img in batch[: args.ref_images]]
    gen = torch.Generator(args.device if args.generator == "device" else "cpu").manual_seed(0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def ours_call(name: str):
        def run() -> None:
            corrupt(dev_batch, name, 3, gen)
            sync()

        return run

    try:
        import cv2

        ref_threads = f", reference OpenCV threads {cv2.getNumThreads()}"
    except ImportError:
        ref_threads = ""
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(
        f"torch {torch.__version__} on {where}, threads {torch.get_num_threads()}, "
        f"device {args.device}, generator {gen.device}, batch {args.batch}{ref_threads}"
    )
    head = f"{'corruption':<18} {'ours img/s':>11} {'ref img/s':>10} {'ratio':>7}"
    ours_s: dict[str, float] = {}
    ref_s: dict[str, float] = {}
    std = [n for n in STANDARD_CORRUPTIONS if n in names]
    for r in range(max(1, args.rounds)):
        ours_r: dict[str, float] = {}
        ref_r: dict[str, float] = {}
        for name in names:
            ours_r[name] = timed(ours_call(name), args.min_time) / args.batch
            if ref_corrupt is not None:
                np.random.seed(0)
                ref_r[name] = timed(
                    lambda n=name: [ref_corrupt(im, 3, n) for im in ref_imgs], args.min_time
                ) / len(ref_imgs)
            ours_s[name] = min(ours_s.get(name, float("inf")), ours_r[name])
            if name in ref_r:
                ref_s[name] = min(ref_s.get(name, float("inf")), ref_r[name])
        if len(std) == len(STANDARD_CORRUPTIONS):
            line = f"round {r + 1}: 15-corruption sweep {1e3 * sum(ours_r[n] for n in std):.2f} ms per image"
            if ref_r:
                ref_ms = 1e3 * sum(ref_r[n] for n in std)
                line += f", reference {ref_ms:.1f} ms, {ref_ms / (1e3 * sum(ours_r[n] for n in std)):.1f}x"
            print(line, flush=True)
    print(head + "\n" + "-" * len(head))
    for name in names:
        line = f"{name:<18} {1 / ours_s[name]:>11.1f}"
        if name in ref_s:
            line += f" {1 / ref_s[name]:>10.1f} {ref_s[name] / ours_s[name]:>6.1f}x"
        print(line)
    if len(std) == len(STANDARD_CORRUPTIONS):
        ours_sweep = sum(ours_s[n] for n in std)
        line = f"{'15-corruption sweep':<18} {1 / ours_sweep:>11.2f}"
        if ref_s:
            ref_sweep = sum(ref_s[n] for n in std)
            line += f" {1 / ref_sweep:>10.2f} {ref_sweep / ours_sweep:>6.1f}x"
        print("-" * len(head) + "\n" + line + "   (full sweeps of one image per second)")
    if ref_corrupt is not None and "glass_blur" in ours_s:
        python_loop_s = reference_glass_python_loop(ref_imgs[:2])
        print(
            f"{'glass_blur vs the pure-Python pixel loop (ImageNet-C original)':<18}: "
            f"{1 / ours_s['glass_blur']:.1f} vs {1 / python_loop_s:.2f} img/s, "
            f"{python_loop_s / ours_s['glass_blur']:.0f}x"
        )
    return 0


def reference_glass_python_loop(images: list) -> float:
    """Seconds per image of the reference's glass blur with its numba-compiled pixel loop run as Python."""
    import imagecorruptions.corruptions as ref

    compiled = ref._shuffle_pixels_njit_glass_blur
    ref._shuffle_pixels_njit_glass_blur = compiled.py_func
    try:
        t0 = time.perf_counter()
        for i, im in enumerate(images):
            ref.glass_blur(im, 3, seed=i)  # numpy's seeding takes 32 bits, numba's 64
        return (time.perf_counter() - t0) / len(images)
    finally:
        ref._shuffle_pixels_njit_glass_blur = compiled


if __name__ == "__main__":
    raise SystemExit(main())
