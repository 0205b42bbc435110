"""Throughput of the corruptions at severity 3 on 224 x 224 images: ours (batched torch) vs the reference
`imagecorruptions` per-image loop, in the same process on the same machine.

Usage: python benchmarks/corruptions.py [--batch 32] [--ref-images 16] [--threads 1] [--device cpu]
Prints images/s for each corruption, the ratio ours/reference, and the 15-corruption sweep.
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


def timed(fn, min_time: float = 0.5) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), repeated for at least ``min_time`` seconds."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / n


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32, help="images per call of ours")
    parser.add_argument("--ref-images", type=int, default=16, help="images per timing of the reference loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corruptions", default="all")
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the reference is single-threaded numpy/OpenCV)"
    )
    args = parser.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)

    from robustbench_rpc.corruptions import CORRUPTIONS, STANDARD_CORRUPTIONS, corrupt

    try:
        from imagecorruptions import corrupt as ref_corrupt
    except ImportError:
        ref_corrupt = None
        print("reference imagecorruptions not installed: only our throughput is printed")
    names = list(CORRUPTIONS) if args.corruptions == "all" else args.corruptions.split(",")
    batch = images_224(args.batch)
    dev_batch = batch.to(args.device)
    ref_imgs = [img.permute(1, 2, 0).numpy() for img in batch[: args.ref_images]]
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def ours_call(name: str):
        def run() -> None:
            corrupt(dev_batch, name, 3, gen)
            sync()

        return run

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"device {args.device}, batch {args.batch}"
    )
    head = f"{'corruption':<18} {'ours img/s':>11} {'ref img/s':>10} {'ratio':>7}"
    print(head + "\n" + "-" * len(head))
    ours_s: dict[str, float] = {}
    ref_s: dict[str, float] = {}
    for name in names:
        ours_s[name] = timed(ours_call(name), args.min_time) / args.batch
        line = f"{name:<18} {1 / ours_s[name]:>11.1f}"
        if ref_corrupt is not None:
            np.random.seed(0)
            ref_s[name] = timed(
                lambda n=name: [ref_corrupt(im, 3, n) for im in ref_imgs], args.min_time
            ) / len(ref_imgs)
            line += f" {1 / ref_s[name]:>10.1f} {ref_s[name] / ours_s[name]:>6.1f}x"
        print(line, flush=True)
    std = [n for n in STANDARD_CORRUPTIONS if n in ours_s]
    if len(std) == len(STANDARD_CORRUPTIONS):
        ours_sweep = sum(ours_s[n] for n in std)
        line = f"{'15-corruption sweep':<18} {1 / ours_sweep:>11.2f}"
        if ref_s:
            ref_sweep = sum(ref_s[n] for n in std)
            line += f" {1 / ref_sweep:>10.2f} {ref_sweep / ours_sweep:>6.1f}x"
        print("-" * len(head) + "\n" + line + "   (full sweeps of one image per second)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
