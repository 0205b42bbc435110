"""Print the per-corruption, per-severity fidelity table of our corruptions against `imagecorruptions`.

Usage: python scripts/corruption_fidelity.py [--data ../shared/data/imagenet-val-100] [--limit 100]
    [--repeats 1] [--corruptions all]
Needs the reference: pip install opencv-python-headless numba scikit-image scipy; pip install --no-deps
imagecorruptions-imaug.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    """Run the comparison and print the table plus a per-corruption summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-val-100")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1,
                        help="draws per random corruption on each side (frost: 8 at least)")
    parser.add_argument("--corruptions", default="all", help="comma-separated names, or all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import imagecorruptions  # noqa: F401
    except ImportError:
        print(
            "The reference package is missing: pip install --no-deps imagecorruptions-imaug", file=sys.stderr
        )
        return 2
    if not args.data.is_dir():
        print(f"Data folder {args.data} does not exist.", file=sys.stderr)
        return 2
    import torch

    from robustbench_rpc.corruptions import CORRUPTIONS
    from robustbench_rpc.corruptions.fidelity import compare, format_table, load_folder, worst_by_corruption

    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = list(CORRUPTIONS) if args.corruptions == "all" else args.corruptions.split(",")
    images = load_folder(args.data, args.limit)
    print(f"{images.shape[0]} images, {tuple(images.shape[2:])}, repeats={args.repeats}")
    t0 = time.time()
    rows = compare(images, names, repeats=args.repeats, seed=args.seed)
    print(format_table(rows))
    print(
        f"\nworst over severities [{time.time() - t0:.0f}s]; "
        "tolerances: dSSIM <= 0.02, dPSNR <= 0.5 dB, MAD <= 2"
    )
    ok = True
    for name, (s, p, m) in worst_by_corruption(rows).items():
        good = s <= 0.02 and p <= 0.5 and (m <= 2.0 or math.isinf(m))
        ok &= good
        mad = "" if math.isinf(m) else f"  MAD {m:.3f}"
        print(f"{name:<18} dSSIM {s:.4f}  dPSNR {p:.3f}{mad}  {'ok' if good else 'OUT OF TOLERANCE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
