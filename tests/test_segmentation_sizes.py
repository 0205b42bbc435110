"""Images of their own sizes (a folder, ADE20K) are scored alone at their size: no padding reaches the model, the
corruption or the attack, so records do not depend on the batch size; what changes a cell is in its key."""

from __future__ import annotations

import numpy as np
from PIL import Image

from robustbench_rpc.data.segmentation import digit_scenes_source, load_segmentation_source
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.segment import attack_segmentation, evaluate_segmentation

MODEL = "segmenter_symvit_digits"


def _folder(root, sizes):
    """A segfolder of digit scenes cut to the given sizes (the 11 digit-scenes classes)."""
    scenes = digit_scenes_source("test", limit=len(sizes))
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(scenes.class_names) + "\n")
    batch = next(iter(scenes.batches(len(sizes))))
    for i, (h, w) in enumerate(sizes):
        image = (batch.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        image = np.concatenate([image, image[:, ::-1]], axis=1)[:h, :w]  # 64 x 128, then cut
        mask = batch.masks[i].numpy()
        mask = np.concatenate([mask, mask[:, ::-1]], axis=1)[:h, :w].astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"s{i}.png")
    return root


def _records(out):
    return {spec.key(): (spec, records) for spec, records, _ in ResultsStore(out).iter_cells()}


def test_mixed_sizes_give_the_same_records_at_any_batch_size(tmp_path):
    root = _folder(tmp_path / "set", [(64, 64), (64, 96), (48, 80)])
    data = f"segfolder:{root}"
    assert load_segmentation_source(data).name == "segfolder:set"
    found = []
    for batch_size in (1, 3):
        out = tmp_path / f"b{batch_size}"
        evaluate_segmentation(MODEL, out=out, data=data, suite="clean,corrupted", corruptions="contrast,shot_noise",
                              severities="2", batch_size=batch_size, device="cpu", progress=False, keep_predictions=0)
        attack_segmentation(MODEL, out=out, data=data, attacks="fgsm,pgd", eps="2/255", steps=2,
                            batch_size=batch_size, device="cpu", progress=False)
        found.append(_records(out))
    one, three = found
    by_slug = [{spec.slug(): records for spec, records in cells.values()} for cells in found]
    assert sorted(by_slug[0]) == sorted(by_slug[1]) and len(by_slug[0]) == 5
    for slug, records in by_slug[0].items():  # per-class areas, prediction by prediction
        other = by_slug[1][slug]
        for column in ("sample_id", "area_intersect", "area_union", "area_pred", "area_label"):
            assert records[column].map(list).tolist() == other[column].map(list).tolist(), (slug, column)
    # the random-start attack and the corruptions name the batch size and seed they were drawn with
    pgd = [spec for spec, _ in one.values() if spec.params.get("name") == "pgd"][0]
    assert pgd.params["seed"] == 0 and pgd.params["batch_size"] is None  # drawn per image here
    assert sorted(one) == sorted(three)  # so the cells are the same cells whatever the batch size
    fgsm = [spec for spec, _ in one.values() if spec.params.get("name") == "fgsm"][0]
    assert "seed" not in fgsm.params


def test_image_size_is_part_of_the_cell(tmp_path):
    root = _folder(tmp_path / "set", [(64, 64), (64, 96)])
    out = tmp_path / "r"
    first = evaluate_segmentation(MODEL, out=out, data=f"segfolder:{root}", device="cpu", progress=False)
    second = evaluate_segmentation(MODEL, out=out, data=f"segfolder:{root}", image_size=32, device="cpu",
                                   progress=False)
    assert len(first.written) == 1 and len(second.written) == 1  # another cell, not "already finished"
    assert [spec.params.get("image_size") for spec in second.written] == [32]
