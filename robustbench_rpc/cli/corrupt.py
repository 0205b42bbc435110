"""``robustbench-rpc corrupt``: write an ImageNet-C style folder tree of corrupted images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated

import typer

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def parse_corruptions(text: str) -> list[str]:
    """Parse ``all``, ``standard``, ``extra``, a group (noise, blur, weather, digital) or a comma list."""
    from robustbench_rpc.corruptions import (
        CORRUPTION_GROUPS,
        CORRUPTIONS,
        EXTRA_CORRUPTIONS,
        STANDARD_CORRUPTIONS,
        check_corruption_name,
    )

    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            found = list(CORRUPTIONS)
        elif part in ("standard", "common"):
            found = list(STANDARD_CORRUPTIONS)
        elif part in ("extra", "validation"):
            found = list(EXTRA_CORRUPTIONS)
        elif part in CORRUPTION_GROUPS:
            found = list(CORRUPTION_GROUPS[part])
        else:
            found = [check_corruption_name(part)]
        names += [n for n in found if n not in names]
    if not names:
        from robustbench_rpc.errors import UserError

        raise UserError(
            "--corruptions is empty; expected 'all' or a comma-separated list of corruption names."
        )
    return names


def parse_severities(text: str) -> list[int]:
    """Parse a comma-separated list of severities from 1 to 5 (e.g. ``1,3,5``)."""
    from robustbench_rpc.errors import UserError

    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= 5:
            raise UserError(f"Severity {part!r} in --severities is invalid; expected integers from 1 to 5.")
        if int(part) not in out:
            out.append(int(part))
    if not out:
        raise UserError("--severities is empty; expected a comma-separated list of integers from 1 to 5.")
    return out


def find_images(folder: Path) -> list[Path]:
    """All image files under ``folder`` (sorted; the folder layout is kept in the output)."""
    from robustbench_rpc.errors import UserError

    if not folder.exists():
        raise UserError(f"Input folder {folder} does not exist.")
    if not folder.is_dir():
        raise UserError(
            f"Input {folder} is not a folder; expected a folder of images (e.g. <wnid>/<file>.JPEG)."
        )
    import os

    # os.walk(followlinks=True): class folders are often symlinks (Path.rglob does not follow them before 3.13)
    files = sorted(
        Path(root) / name
        for root, _, names in os.walk(folder, followlinks=True)
        for name in names
        if Path(name).suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UserError(f"Input folder {folder} contains no images; expected .JPEG/.jpg/.png files.")
    return files


def batch_seed(seed: int, name: str, severity: int, batch_index: int) -> int:
    """A stable 63-bit seed per (corruption, severity, batch), so that resumed runs redraw the same noise."""
    digest = hashlib.sha256(f"{seed}/{name}/{severity}/{batch_index}".encode()).hexdigest()
    return int(digest[:15], 16)


def write_jpeg_atomic(array: object, target: Path, quality: int) -> None:
    """Save a uint8 HxWx3 array as JPEG: write a hidden temporary file beside ``target``, then rename it."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        Image.fromarray(array).save(tmp, format="JPEG", quality=quality)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def corrupt_command(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Folder of clean images, e.g. <wnid>/<file>.JPEG.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Root of the ImageNet-C style output tree.")],
    corruptions: Annotated[
        str, typer.Option(help="'all', 'standard' (15), 'extra' (4), a group, or comma-separated names.")
    ] = "all",
    severities: Annotated[str, typer.Option(help="Comma-separated severities from 1 to 5.")] = "1,2,3,4,5",
    seed: Annotated[int, typer.Option(help="Seed of the random corruptions (same seed, same images).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N images (sorted).")] = None,
    resize: Annotated[int, typer.Option(help="Resize the shorter side to this before cropping.")] = 256,
    crop: Annotated[int, typer.Option(help="Centre-crop size (ImageNet-C: 224).")] = 224,
    keep_size: Annotated[
        bool, typer.Option("--keep-size", help="Corrupt images at their own size (no resize, no crop).")
    ] = False,
    quality: Annotated[int, typer.Option(help="JPEG quality of the written files (ImageNet-C: 85).")] = 85,
    batch_size: Annotated[int, typer.Option(help="Images corrupted together.")] = 32,
    device: Annotated[str, typer.Option(help="Torch device for the corruptions, e.g. cpu or cuda.")] = "cpu",
) -> None:
    """Write <output>/<corruption>/<severity>/<wnid>/<file>.JPEG for every image, corruption and severity."""
    from robustbench_rpc.errors import UserError

    names = parse_corruptions(corruptions)
    levels = parse_severities(severities)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of images, got {limit}.")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}.")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality must be from 1 to 100, got {quality}.")
    if not keep_size and (crop < 32 or resize < crop):
        raise UserError(f"--crop must be at least 32 and --resize at least --crop, got {resize} and {crop}.")
    files = find_images(input)[:limit]
    from robustbench_rpc.atomic import check_writable_dir

    check_writable_dir(output, "--output")
    try:
        _run(input, output, files, names, levels, seed, resize, crop, keep_size, quality, batch_size, device)
    except OSError as exc:  # e.g. the disk filled up, or permissions changed during the run
        raise UserError(f"Cannot write the corrupted images under {output}: "
                        f"{exc.strerror or exc} ({exc.filename or output}).") from None


def _run(
    root: Path,
    output: Path,
    files: list[Path],
    names: list[str],
    levels: list[int],
    seed: int,
    resize: int,
    crop: int,
    keep_size: bool,
    quality: int,
    batch_size: int,
    device_name: str,
) -> None:
    import numpy as np
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from robustbench_rpc.corruptions import corrupt
    from robustbench_rpc.corruptions.fidelity import center_crop_resized
    from robustbench_rpc.errors import UserError

    try:
        device = torch.device(device_name)
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"Device {device_name!r} is not available ({exc}).") from None
    rel = [f.relative_to(root).with_suffix(".JPEG") for f in files]
    step = 1 if keep_size else batch_size
    batches = [list(range(i, min(i + step, len(files)))) for i in range(0, len(files), step)]
    total = len(files) * len(names) * len(levels)
    written = skipped = 0
    columns = (TextColumn("[bold]corrupt"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("corrupt", total=total)
        for b, idx in enumerate(batches):
            todo = {
                (n, s): [i for i in idx if not (output / n / str(s) / rel[i]).exists()]
                for n in names
                for s in levels
            }
            if not any(todo.values()):
                skipped += len(idx) * len(names) * len(levels)
                progress.advance(task, len(idx) * len(names) * len(levels))
                continue
            arrays = []
            for i in idx:
                try:
                    size = (None, None) if keep_size else (resize, crop)
                    arrays.append(center_crop_resized(files[i], *size))
                except OSError as exc:
                    raise UserError(f"Image {files[i]} cannot be read ({exc}).") from None
            batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)
            for n in names:
                for s in levels:
                    missing = todo[(n, s)]
                    skipped += len(idx) - len(missing)
                    if missing:
                        gen = torch.Generator().manual_seed(batch_seed(seed, n, s, b))
                        out = corrupt(batch, n, s, gen).permute(0, 2, 3, 1).cpu().numpy()
                        for i in missing:
                            write_jpeg_atomic(out[i - idx[0]], output / n / str(s) / rel[i], quality)
                            written += 1
                    progress.advance(task, len(idx))
    typer.echo(f"Wrote {written} images to {output} ({skipped} already present).")
