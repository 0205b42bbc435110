"""Segmentation as an engine task: records round-trip, metrics from records, seeding, resume, guards, saved masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_resume_and_guards import killed_after_batches

from robustbench_rpc.corruptions import corrupt
from robustbench_rpc.data.base import Batch
from robustbench_rpc.data.batches import canonical_batches
from robustbench_rpc.engine.runner import cell_seed
from robustbench_rpc.engine.segmentation import predictions_folder
from robustbench_rpc.errors import UserError
from robustbench_rpc.metrics.segmentation import class_areas, segmentation_metrics
from robustbench_rpc.results.journal import journal_directories
from robustbench_rpc.results.schema import CellSpec
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy
from robustbench_rpc.segment import evaluate_segmentation

NUM_CLASSES = 3


class SceneSource:
    """A stand-in segmentation source: coloured squares on grey, masks label each square's class, some ignored."""

    name = "toy-scenes"
    num_classes = NUM_CLASSES
    class_names = ["background", "red", "green"]
    ignore_index = 255
    class_indices = None

    def __init__(self, n: int = 10, size: int = 32, bad_label: int | None = None) -> None:
        gen = torch.Generator().manual_seed(7)
        self.images = torch.full((n, 3, size, size), 0.5)
        self.masks = torch.zeros((n, size, size), dtype=torch.long)
        for i in range(n):
            for cls, channel in ((1, 0), (2, 1)):
                y, x = torch.randint(0, size - 10, (2,), generator=gen).tolist()
                self.images[i, :, y:y + 10, x:x + 10] = 0.1
                self.images[i, channel, y:y + 10, x:x + 10] = 0.9
                self.masks[i, y:y + 10, x:x + 10] = cls
            self.masks[i, :2, :] = 255  # a strip of ignored pixels
            self.images[i, 0, -3:, :] = 0.8  # a reddish strip of background: the toy model is not perfect
        if bad_label is not None:
            self.masks[n - 1, 5, 5] = bad_label
        self.sample_ids = [f"scene{i:03d}" for i in range(n)]
        self.report = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    def fingerprint(self) -> dict:
        return {"dataset": self.name, "num_samples": len(self)}

    def missing(self) -> list:
        return []

    def _batch(self, positions: range) -> Batch:
        start, stop = positions.start, positions.stop
        return Batch(self.images[start:stop], torch.full((stop - start,), -1), self.sample_ids[start:stop],
                     torch.arange(start, stop), torch.zeros(stop - start, dtype=torch.bool),
                     masks=self.masks[start:stop])

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False):
        for _, positions in canonical_batches(len(self), batch_size):
            yield self._batch(positions)

    def shard_batches(self, batch_size, rank=0, world_size=1, loading=None, skip=frozenset()):
        for number, positions in canonical_batches(len(self), batch_size, rank, world_size):
            if number not in skip:
                yield number, self._batch(positions)


class ColourModel(torch.nn.Module):
    """A stand-in segmentation model: a fixed 1x1 convolution from colour to class logits (imperfect on purpose)."""

    num_classes = NUM_CLASSES

    def __init__(self, nan: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, NUM_CLASSES, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [4.0, -2.0, -2.0], [-2.0, 4.0, -1.0]])[..., None,
                                                                                                      None])
            self.conv.bias.copy_(torch.tensor([0.4, -0.3, -0.6]))
        self.nan = nan
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.conv(x)
        return torch.full_like(out, float("nan")) if self.nan else out


COMMON = {"corruptions": "gaussian_noise,brightness", "severities": "3", "batch_size": 4, "progress": False,
          "device": "cpu"}


def _run(out, model=None, source=None, suite="clean,corrupted", **extra):
    return evaluate_segmentation(model or ColourModel(), out=out, data=source or SceneSource(), suite=suite,
                                 **{**COMMON, **extra})


def test_records_round_trip_and_metrics_equal_a_direct_computation(tmp_path):
    source, model = SceneSource(), ColourModel()
    summary = _run(tmp_path / "r", model, source)
    assert len(summary.written) == 3
    store = ResultsStore(tmp_path / "r")
    frame = tidy(tmp_path / "r")
    with torch.no_grad():
        clean_pred = model(source.images).argmax(1)
    for spec in summary.written:
        records, meta = store.read_cell(spec)
        assert spec.params["task"] == "segmentation" and meta["extra"]["task"] == "segmentation"
        assert meta["extra"]["class_names"] == ["background", "red", "green"] and meta["extra"]["num_classes"] == 3
        assert list(records["sample_id"]) == source.sample_ids and list(records["index"]) == list(range(10))
        if spec.condition == "clean":
            pred = clean_pred
        else:  # the same draws as classification's generated corruptions: cell_seed(seed, name, severity, start)
            parts = []
            for _, positions in canonical_batches(10, 4):
                gen = torch.Generator().manual_seed(cell_seed(0, spec.params["name"], 3, positions.start))
                images = corrupt(source.images[positions.start:positions.stop], spec.params["name"], 3,
                                 generator=gen)
                with torch.no_grad():
                    parts.append(model(images).argmax(1))
            pred = torch.cat(parts)
        for i, row in records.iterrows():  # each record is that image's histograms
            direct = class_areas(pred[i].numpy(), source.masks[i].numpy(), NUM_CLASSES)
            assert row["area_intersect"] == direct.intersect.tolist()
            assert row["area_union"] == direct.union.tolist() and row["area_label"] == direct.label.tolist()
        expected = segmentation_metrics(class_areas(pred.numpy(), source.masks.numpy(), NUM_CLASSES))
        rows = frame[frame["cell_key"] == spec.key()].set_index("metric")["value"]
        for metric in ("aAcc", "mIoU", "mAcc"):
            assert rows[metric] == pytest.approx(expected[metric])
    corrupted = frame[(frame["condition"] == "corruption") & (frame["metric"] == "mIoU")]["value"]
    summary_rows = frame[frame["condition"] == "segmentation-c-summary"].set_index("metric")
    assert summary_rows.loc["mIoU", "value"] == pytest.approx(corrupted.mean())
    assert summary_rows.loc["mIoU", "n"] == 2
    assert clean_pred.unique().numel() == NUM_CLASSES  # the toy model is neither constant nor perfect
    assert 20 < frame[(frame["condition"] == "clean") & (frame["metric"] == "mIoU")]["value"].item() < 100


def test_the_task_is_a_coordinate_of_the_cell():
    classification = CellSpec("m", "toy-scenes", "clean", {})
    segmentation = CellSpec("m", "toy-scenes", "clean", {"task": "segmentation"})
    assert classification.key() != segmentation.key()
    assert classification.condition_key() != segmentation.condition_key()


def test_resume_after_a_kill_gives_the_same_records(tmp_path, monkeypatch):
    reference = _run(tmp_path / "ref")
    killed_after_batches(monkeypatch, 2, lambda: _run(tmp_path / "r"))
    model = ColourModel()
    resumed = _run(tmp_path / "r", model)
    assert resumed.resumed_batches == 2
    assert model.calls == 3  # only the third batch of 3 (10 images, batches of 4) ran, for each of the 3 cells
    ref, got = ResultsStore(tmp_path / "ref"), ResultsStore(tmp_path / "r")
    for spec in reference.written:
        assert got.read_cell(spec)[0].equals(ref.read_cell(spec)[0])
    assert journal_directories(tmp_path / "r") == []


def test_non_finite_logits_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(UserError, match="non-finite logits"):
        _run(tmp_path / "r", ColourModel(nan=True))
    assert not (tmp_path / "r").exists()


def test_a_label_outside_the_classes_is_one_sentence_and_nothing_is_written(tmp_path):
    with pytest.raises(UserError) as info:
        _run(tmp_path / "r", source=SceneSource(bad_label=7))
    assert str(info.value) == ("The mask of scene009 in toy-scenes has label 7, outside its 3 classes (0..2, 255 = "
                               "ignored); check the masks and the class list.")
    assert not (tmp_path / "r").exists()


def test_a_model_with_other_classes_is_refused(tmp_path):
    model = ColourModel()
    model.num_classes = 150
    with pytest.raises(UserError, match="150 outputs but toy-scenes has 3 classes"):
        _run(tmp_path / "r", model)
    assert not (tmp_path / "r").exists()


def test_the_first_clean_predictions_are_saved_beside_the_truth(tmp_path):
    source, model = SceneSource(), ColourModel()
    summary = _run(tmp_path / "r", model, source, suite="clean", keep_predictions=5, corruptions=None,
                   severities=None)
    folder = predictions_folder(tmp_path / "r", summary.written[0])
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i:05d}-{k}.png" for i in range(5)
                                                              for k in ("image", "truth", "pred"))
    with torch.no_grad():
        pred = model(source.images[4:5]).argmax(1)[0].numpy()
    assert np.array_equal(np.asarray(Image.open(folder / "00004-pred.png")), pred)
    assert np.array_equal(np.asarray(Image.open(folder / "00004-truth.png")), source.masks[4].numpy())


def test_unknown_suite_entry_and_missing_data_are_sentences(tmp_path):
    with pytest.raises(UserError, match="Unknown segmentation suite entry 'imagenet-c'; expected some of clean, "
                                        "corrupted, toy-scenes-c"):
        _run(tmp_path / "r", suite="clean,imagenet-c")
    with pytest.raises(UserError, match="needs --data"):
        evaluate_segmentation(ColourModel(), out=tmp_path / "r", data=None)
    assert not (tmp_path / "r").exists()


def test_sample_shards_merge_into_the_records_of_one_run(tmp_path):
    from robustbench_rpc.results.merge import merge_results

    reference = _run(tmp_path / "ref")
    for index in (0, 1):
        summary = _run(tmp_path / f"s{index}", shard=f"{index}/2", shard_by="samples")
        assert summary.part == f"{index}/2"
    merge_results([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m")
    ref, merged = ResultsStore(tmp_path / "ref"), ResultsStore(tmp_path / "m")
    for spec in reference.written:
        assert merged.read_cell(spec)[0].equals(ref.read_cell(spec)[0])
    clean = next(s for s in reference.written if s.condition == "clean")
    saved = predictions_folder(tmp_path / "ref", clean)  # 4 kept: batch 0 (shard 0) and batch 1 (shard 1)
    copied = predictions_folder(tmp_path / "m", clean)
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in saved.iterdir())
    assert all((copied / p.name).read_bytes() == p.read_bytes() for p in saved.iterdir())
