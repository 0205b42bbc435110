from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from robustbench_rpc.data import classes as C
from robustbench_rpc.errors import UserError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_synsets_are_the_canonical_1000_in_sorted_order():
    wnids = C.imagenet_wnids()
    assert len(wnids) == 1000
    assert len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)
    assert all(C.is_wnid(w) for w in wnids)
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"
    names = C.imagenet_class_names()
    assert names[0].startswith("tench") and names[999].startswith("toilet tissue")
    assert C.class_index("n01443537") == 1  # goldfish


def test_subset_lists_have_200_known_wnids_and_a_r_differ():
    a, r, o = (C.subset_wnids(n) for n in ("imagenet-a", "imagenet-r", "imagenet-o"))
    known = set(C.imagenet_wnids())
    for lst in (a, r, o):
        assert len(lst) == 200 and len(set(lst)) == 200 and set(lst) <= known
    assert set(a) != set(r)
    assert len(set(a) & set(r)) == 86  # the published lists overlap in 86 classes
    # spot checks against the published index lists (hendrycks/natural-adv-examples, hendrycks/imagenet-r)
    assert C.class_mask("imagenet-a")[:5].tolist() == [6, 11, 13, 15, 17]
    assert C.class_mask("imagenet-r")[:5].tolist() == [1, 2, 4, 6, 8]
    assert C.class_mask("imagenet-o")[:3].tolist() == [1, 51, 70]  # goldfish, triceratops, harvestman
    assert C.class_mask("imagenet") is None


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="not one of the 1000"):
        C.class_index("n00000000")
    with pytest.raises(UserError, match="no published class subset"):
        C.subset_wnids("imagenet-x")
    with pytest.raises(UserError, match="unknown subset"):
        C.subset_ids("robustbench-4k")


def test_mask_logits_keeps_the_1000_index_space_and_matches_restricted_softmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 1000)
    idx = C.class_mask("imagenet-r")
    masked = C.mask_logits(logits, idx)
    restricted = C.restrict_logits(logits, idx)
    assert restricted.shape == (6, 200)
    # argmax over the masked 1000 equals the 200-argmax mapped back to the 1000-index space
    assert torch.equal(masked.argmax(1), idx[restricted.argmax(1)])
    probs_masked = masked.softmax(1)
    assert torch.allclose(probs_masked[:, idx], restricted.softmax(1), atol=1e-6)
    assert float(probs_masked[:, [0, 3, 5]].sum()) == 0.0  # classes outside the mask get no probability
    assert C.mask_logits(logits, None) is logits


def test_robustbench_5k_list_is_shipped():
    ids = C.robustbench_5k_ids()
    assert len(ids) == 5000 and len(set(ids)) == 5000
    assert all(i.split("/")[0] in C.wnid_to_index() and i.endswith(".JPEG") for i in ids)


@pytest.mark.skipif(
    not (SHARED / "imagenet-val-100").is_dir(), reason="../shared/data/imagenet-val-100 absent"
)
def test_shared_val_folders_and_official_labels_agree_with_the_canonical_order():
    folders = [p.name for p in (SHARED / "imagenet-val-100").iterdir() if p.is_dir()]
    assert folders and set(folders) <= set(C.imagenet_wnids())
    with open(SHARED / "imagenet-val-100.labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 100
    for row in rows:
        assert C.class_index(row["wnid"]) == int(row["class_index"])
