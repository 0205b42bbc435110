"""Throughput of the evaluation pipeline, as ratios against baselines measured in the same run.

1. clean evaluation: ``robustbench_rpc.api.evaluate`` (torchvision.io decode, uint8 tensor resize, engine, records
   written to Parquet) vs an official-style loop (torchvision ImageFolder + PIL + timm eval transforms + plain
   model forward), same model, same images, same batch size, same DataLoader workers;
2. ImageNet-C: on the fly (one decode of the validation images serves all cells) vs reading a released-style
   ImageNet-C tree written by ``robustbench-rpc corrupt`` (same cells, same images);
3. model-bound check: our clean images/s divided by the model's forward-only images/s on preloaded tensors;
4. the speed option ``--amp bf16`` (bfloat16 autocast): our clean pipeline with it vs the official-style loop in
   float32, and what it costs: top-1 agreement and largest logit difference against float32 on the same images.

Usage: python benchmarks/pipeline.py [--model deit_tiny_patch16_224] [--threads 2] [--workers 1] [--batch-size 25]
       [--images 100] [--c-images 48] [--corruptions gaussian_noise,contrast,fog] [--severity 3]
       [--device cpu|cuda] [--copies K]
On a GPU (``--device cuda``) a row for ``--decode gpu`` (nvjpeg) is added, AMP uses the GPU's autocast, and
``--copies K`` links every image K times (more images than the 100 keep a fast GPU busy long enough to time).
Needs ../shared/data/imagenet-val-100 (skips with a message when absent). Random weights, nothing downloaded.
Torch threads are pinned with --threads (small ops are very slow under contention on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "imagenet-val-100"


def limited_folder(src: Path, dst: Path, n: int, copies: int = 1) -> Path:
    """Symlink the first ``n`` images (sorted) of ``src`` into ``dst`` (same <wnid>/<file> layout), each
    ``copies`` times (copy c > 0 as ``c<c>_<file>``)."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    for path in files[:n]:
        rel = path.relative_to(src)
        for copy in range(copies):
            target = dst / rel.parent / (rel.name if copy == 0 else f"c{copy}_{rel.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return dst


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that timings include it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def official_loop(model, root: Path, batch_size: int, workers: int, device: str = "cpu") -> tuple[float, int]:
    """RobustBench/timm-style evaluation: ImageFolder + PIL + timm transform + plain forward; (seconds, images)."""
    import timm.data
    import torch
    from torchvision.datasets import ImageFolder

    inner = model.model  # the timm model taking normalized input
    config = timm.data.resolve_data_config({}, model=inner)
    transform = timm.data.create_transform(**config)
    loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch_size,
                                         shuffle=False, num_workers=workers, pin_memory=device != "cpu")
    start, n, correct = time.perf_counter(), 0, 0
    with torch.no_grad():
        for images, labels in loader:
            logits = inner(images.to(device, non_blocking=True))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            n += len(labels)
    return time.perf_counter() - start, n


def our_batches(model, root: Path, batch_size: int, workers: int = 0, decode_device: str | None = None):
    """Our data path over the ImageNet-layout folder ``root``: an iterator of loaded batches (decoded on
    ``decode_device`` when given, else by the loader on the CPU)."""
    import torch

    from robustbench_rpc.data import build_dataset
    from robustbench_rpc.engine.sources import FileSource, LoaderOptions

    source = FileSource(build_dataset("imagenet", root, model.preprocessing))
    loading = LoaderOptions(workers, decode_device=torch.device(decode_device) if decode_device else None)
    return (batch for _, batch in source.shard_batches(batch_size, loading=loading))


def data_only(model, root: Path, batch_size: int, workers: int, official: bool,
              decode_device: str | None = None) -> tuple[float, int]:
    """Decode + transform + collate only (no model): ours (FileSource) or the official-style ImageFolder loop."""
    import timm.data
    import torch
    from torchvision.datasets import ImageFolder

    start, n = time.perf_counter(), 0
    if official:
        config = timm.data.resolve_data_config({}, model=model.model)
        loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=timm.data.create_transform(**config)),
                                             batch_size=batch_size, shuffle=False, num_workers=workers)
        for images, _ in loader:
            n += len(images)
    else:
        for batch in our_batches(model, root, batch_size, workers, decode_device):
            n += len(batch)
        synchronize(decode_device or "cpu")
    return time.perf_counter() - start, n


def ours(model, out: Path, batch_size: int, workers: int, device: str = "cpu", **kw) -> tuple[float, int]:
    """Our pipeline end to end (records written); return (seconds, sample evaluations)."""
    from robustbench_rpc.api import evaluate

    start = time.perf_counter()
    summary = evaluate(model, out=out, batch_size=batch_size, workers=workers, device=device, progress=False,
                       force=True, **kw)
    seconds = time.perf_counter() - start
    n = int(summary.table.query("metric == 'top1'")["n"].sum())
    return seconds, n


def bf16_agreement(model, root: Path, batch_size: int, device: str = "cpu") -> tuple[float, float]:
    """Top-1 agreement and max |logit difference| of bfloat16 autocast against float32 on the images."""
    import torch

    agree, n, worst = 0, 0, 0.0
    with torch.inference_mode():
        for batch in our_batches(model, root, batch_size):
            images = batch.images.to(device)
            ref = model(images)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                low = model(images).float()
            agree += int((ref.argmax(1) == low.argmax(1)).sum())
            n += len(ref)
            worst = max(worst, float((ref - low).abs().max()))
    return agree / max(n, 1), worst


def forward_only(model, batch_size: int, n: int, device: str = "cpu") -> tuple[float, int]:
    """Forward passes on preloaded tensors (the model's own speed); return (seconds, images)."""
    import torch

    x = torch.rand(batch_size, 3, 224, 224, device=device)
    batches = max(1, n // batch_size)
    with torch.inference_mode():
        model(x)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        synchronize(device)
    return time.perf_counter() - start, batches * batch_size


def best(fn, repeats: int) -> tuple[float, int]:
    """Fastest of ``repeats`` calls of ``fn`` returning (seconds, images)."""
    runs = [fn() for _ in range(repeats)]
    return min(runs, key=lambda r: r[0] / r[1])


def clean_rows(label: str, mine: tuple[float, int], data_mine: tuple[float, int], base: tuple[float, int],
               data_base: tuple[float, int], fwd: tuple[float, int]) -> list[tuple[str, str, float, float]]:
    """The clean-evaluation rows for one variant of ours (``label``, e.g. " --decode gpu"): end to end and data
    path only against the official-style loop, and the model-bound ratio; timings are (seconds, images)."""
    ips = {k: n / s for k, (s, n) in {"mine": mine, "data_mine": data_mine, "base": base, "data_base": data_base,
                                      "fwd": fwd}.items()}
    return [
        (f"clean: ours{label} vs official-style loop", f"{ips['mine']:.2f} vs {ips['base']:.2f} img/s",
         ips["mine"] / ips["base"], 1.3),
        (f"data path only (no workers): ours{label} vs official-style",
         f"{ips['data_mine']:.1f} vs {ips['data_base']:.1f} img/s", ips["data_mine"] / ips["data_base"], 1.3),
        (f"model-bound: ours{label} / forward-only", f"{ips['mine']:.2f} vs {ips['fwd']:.2f} img/s",
         ips["mine"] / ips["fwd"], 1.0),
    ]


def imagenet_c_rows(model, tmp: Path, args, run: dict) -> list[tuple[str, str, float, float]]:
    """On-the-fly ImageNet-C vs reading a released-style tree written by ``robustbench-rpc corrupt``; on a GPU
    also with nvjpeg decoding and with the corruptions' random draws on the GPU."""
    from robustbench_rpc.cli.app import main as cli

    c_val = limited_folder(DATA, tmp / "val-c", args.c_images, args.c_copies)
    tree = tmp / "imagenet-c"
    start = time.perf_counter()
    try:
        cli(["corrupt", "--input", str(c_val), "--output", str(tree), "--corruptions", args.corruptions,
             "--severities", args.severity])
    except SystemExit as exc:
        if exc.code:
            raise
    print(f"(writing the released-style tree with `robustbench-rpc corrupt` took {time.perf_counter() - start:.1f} "
          "s, not counted below)")
    c_kw = {"suite": "imagenet-c", "corruptions": args.corruptions, "severities": args.severity, **run}
    generated = {"imagenet-c": "generated", "imagenet": str(c_val)}
    released = best(lambda: ours(model, tmp / "r-rel", args.batch_size, args.workers,
                                 paths={"imagenet-c": str(tree)}, **c_kw), args.repeats)
    rel_ips = released[1] / released[0]
    cells = len(args.corruptions.split(",")) * len(args.severity.split(","))
    variants = [("", {})]
    if run["device"].startswith("cuda"):
        variants += [(" --decode gpu", {"decode": "gpu"}),
                     (" --decode gpu --corruption-rng device", {"decode": "gpu", "corruption_rng": "device"})]
    rows = []
    for i, (label, extra) in enumerate(variants):  # one results directory each: their model identities differ
        found = best(lambda i=i, extra=extra: ours(model, tmp / f"r-gen-{i}", args.batch_size, args.workers,
                                                   paths=generated, **c_kw, **extra), args.repeats)
        ips = found[1] / found[0]
        rows.append((f"ImageNet-C ({cells} cells): on the fly{label} vs released tree",
                     f"{ips:.2f} vs {rel_ips:.2f} img/s", ips / rel_ips, 1.0))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_tiny_patch16_224", help="timm or robustbench-rpc name (random "
                        "weights)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (pinned)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers, both pipelines")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--images", type=int, default=100, help="images for the clean comparison")
    parser.add_argument("--c-images", type=int, default=48, help="images for the ImageNet-C comparison")
    parser.add_argument("--corruptions", default="gaussian_noise,contrast,fog")
    parser.add_argument("--severity", default="3")
    parser.add_argument("--repeats", type=int, default=1, help="repeat each measurement, keep the fastest")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both pipelines and the forward-only check)")
    parser.add_argument("--copies", type=int, default=1, help="link each image this many times")
    parser.add_argument("--c-copies", type=int, default=1, help="copies of each ImageNet-C image (0 images: no "
                        "ImageNet-C rows)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the benchmark needs 100 ImageNet validation images)")
        return 0
    import torch

    import robustbench_rpc

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    model = robustbench_rpc.load_model(args.model).eval().to(device)
    gpu = device.startswith("cuda")
    where = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"model {args.model} (random weights) on {where}, threads {torch.get_num_threads()}, workers "
          f"{args.workers}, batch {args.batch_size}, {args.images * args.copies} images, torch {torch.__version__}")
    run = {"device": device}
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clean = limited_folder(DATA, tmp / "val", args.images, args.copies)
        n_clean = args.images * args.copies
        base = best(lambda: official_loop(model, clean, args.batch_size, args.workers, device), args.repeats)
        mine = best(lambda: ours(model, tmp / "r-clean", args.batch_size, args.workers, suite="clean",
                                 paths={"imagenet": str(clean)}, **run), args.repeats)
        # the data path alone, in this process (no worker start-up in the figure), fastest of >= 2 passes, on at
        # most 4 copies of the images (a single process decodes slowly)
        few = limited_folder(DATA, tmp / "val-few", args.images, min(args.copies, 4))
        data_base = best(lambda: data_only(model, few, args.batch_size, 0, True), max(2, args.repeats))
        data_mine = best(lambda: data_only(model, few, args.batch_size, 0, False), max(2, args.repeats))
        fwd = best(lambda: forward_only(model, args.batch_size, n_clean, device), args.repeats)
        bf16 = best(lambda: ours(model, tmp / "r-bf16", args.batch_size, args.workers, suite="clean",
                                 paths={"imagenet": str(clean)}, precision="bf16", **run), args.repeats)
        agreement, logit_diff = bf16_agreement(model, clean, args.batch_size, device)
        base_ips = base[1] / base[0]
        rows.extend(clean_rows("", mine, data_mine, base, data_base, fwd))
        bf16_ips = bf16[1] / bf16[0]
        rows.append(("clean: ours --amp bf16 vs official-style (fp32)", f"{bf16_ips:.2f} vs {base_ips:.2f} img/s",
                     bf16_ips / base_ips, 1.3))
        if gpu:
            nvjpeg = best(lambda: ours(model, tmp / "r-nvjpeg", args.batch_size, args.workers, suite="clean",
                                       paths={"imagenet": str(clean)}, decode="gpu", **run), args.repeats)
            data_nv = best(lambda: data_only(model, few, args.batch_size, 0, False, device), max(2, args.repeats))
            rows.extend(clean_rows(" --decode gpu", nvjpeg, data_nv, base, data_base, fwd))

        if args.c_images > 0:
            rows.extend(imagenet_c_rows(model, tmp, args, run))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'comparison':<{width}}  {'throughput':>26}  {'ratio':>6}  {'target':>6}")
    for name, detail, ratio, target in rows:
        print(f"{name:<{width}}  {detail:>26}  {ratio:6.2f}  {target:6.2f}")
    print(f"\n--amp bf16 against float32 on the same {n_clean} images: top-1 agreement {agreement:.1%}, "
          f"largest logit difference {logit_diff:.3g} (random weights: a trained model's agreement is in the README)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
