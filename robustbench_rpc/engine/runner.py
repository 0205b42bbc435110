"""The engine: runs a plan of jobs (each one or several cells) and writes every finished cell to the results store.

Three kinds of job: classification (clean, released corruptions, ImageNet-A/R, folders; OOD detection for
ImageNet-O), generated corruptions (one decode of the clean images serves every requested corruption and severity)
and attacks (one (attack, eps) per cell). Finished cells are skipped on a re-run unless ``force``.

With ``EngineOptions.part`` (``--shard i/n --shard-by samples``) every cell runs only on the canonical batches
``b % n == i`` and is written as a part (``ResultsStore.write_part``) that ``merge`` assembles later.

Every pass journals each batch it finishes (``EngineOptions.journal_root``, :mod:`robustbench_rpc.results.journal`)
and reads the journal back when it starts, so a killed run redoes at most the batches in flight; every batch's
logits are checked to be finite before they become records (:mod:`robustbench_rpc.engine.guards`).

Segmentation jobs (:mod:`robustbench_rpc.engine.segmentation`) run through the same pass, journal and writing.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from robustbench_rpc.data.base import Batch, LoadReport
from robustbench_rpc.data.classes import mask_logits
from robustbench_rpc.engine.device import autocast
from robustbench_rpc.engine.distributed import (
    DistContext,
    all_gather,
    canonical_batches,
    gather_to_main,
    sample_shard_rank,
)
from robustbench_rpc.engine.guards import (
    NonFiniteOutputError,
    UnscorableBatchError,
    check_finite,
    no_readable_images,
)
from robustbench_rpc.engine.records import records_frame, records_from_logits
from robustbench_rpc.engine.sources import BatchSource, LoaderOptions
from robustbench_rpc.results.journal import BatchJournal
from robustbench_rpc.results.schema import CellSpec, required_columns


@dataclass(frozen=True)
class SamplePart:
    """The share of a sample-sharded run (``--shard index/count --shard-by samples``) and the plan it belongs to."""

    index: int
    count: int
    plan_hash: str


@dataclass
class EngineOptions:
    """How to run: batch size, data loading, device, precision, seed, resume behaviour, distributed rank."""

    batch_size: int = 64
    workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    seed: int = 0
    force: bool = False
    pin_memory: bool = False
    prefetch_factor: int | None = None
    channels_last: bool = False
    decode: str = "cpu"
    dist: DistContext = field(default_factory=DistContext)
    part: SamplePart | None = None
    journal_root: Any = None  # results directory whose journal/ keeps finished batches (None: no journal)
    journal_context: dict[str, Any] = field(default_factory=dict)  # device, compile...: what else changes numbers

    @property
    def loading(self) -> LoaderOptions:
        """The data-loading options of the sources."""
        decode_device = self.device if self.decode == "gpu" else None
        return LoaderOptions(self.workers, self.pin_memory, self.prefetch_factor, decode_device)


@dataclass
class BatchPart:
    """What one canonical batch produced: records per cell key and the batch's load accounting."""

    number: int
    rows: dict[str, list[dict[str, Any]]]
    skipped: list[tuple[str, str]]
    converted: list[tuple[str, str]]
    loaded: int
    log: list[str] = field(default_factory=list)  # what the attack logged (AutoAttack's checks among it)
    resumed: bool = False  # read back from the journal of an interrupted run, not computed now

    def to_json(self) -> dict[str, Any]:
        """Return the batch as JSON-serialisable data (for the journal)."""
        return {"rows": self.rows, "skipped": [list(x) for x in self.skipped],
                "converted": [list(x) for x in self.converted], "loaded": self.loaded, "log": self.log}

    @classmethod
    def from_json(cls, number: int, data: dict[str, Any]) -> BatchPart:
        """Rebuild a journaled batch (marked ``resumed``)."""
        return cls(number, data["rows"], [tuple(x) for x in data["skipped"]],
                   [tuple(x) for x in data["converted"]], int(data["loaded"]), list(data["log"]), resumed=True)


@dataclass
class ClassifyJob:
    """One cell: predictions on a source (``ood=True`` adds OOD scores for detection metrics)."""

    spec: CellSpec
    source: BatchSource
    ood: bool = False
    transform: Callable[[Tensor], Tensor] | None = None

    @property
    def specs(self) -> list[CellSpec]:
        """The cells this job produces."""
        return [self.spec]


@dataclass
class GeneratedCorruptionJob:
    """Many cells from one pass over clean images: each (corruption, severity) is generated on the fly."""

    cells: list[tuple[CellSpec, str, int]]
    source: BatchSource
    to_model: Callable[[Tensor], Tensor] | None = None

    @property
    def specs(self) -> list[CellSpec]:
        """The cells this job produces."""
        return [spec for spec, _, _ in self.cells]

    @property
    def jpeg_quality(self) -> int | None:
        """The quality of the JPEG round trip after corrupting (None: none), as the cells' parameters say."""
        return self.cells[0][0].params.get("jpeg_quality")

    @property
    def draws_on_device(self) -> bool:
        """True when the cells' parameters name a GPU to draw on (``rng``), False for CPU draws."""
        return "rng" in self.cells[0][0].params


@dataclass
class AttackJob:
    """One cell: an attack (name, norm, eps, options) on a source, in pixel space unless ``compat``."""

    spec: CellSpec
    source: BatchSource
    attack: Any  # robustbench_rpc.attacks.AttackSpec
    compat: bool | str = False
    save_adv: Any = None  # directory for adversarial examples, or None
    surrogate: torch.nn.Module | None = None  # the model a transfer attack crafts its examples on

    @property
    def specs(self) -> list[CellSpec]:
        """The cells this job produces."""
        return [self.spec]


@dataclass
class StabilityJob:
    """One audit probe cell: ``repeats`` forward passes on the clean images and one under tiny uniform noise."""

    spec: CellSpec
    source: BatchSource
    repeats: int
    noise_linf: float

    @property
    def specs(self) -> list[CellSpec]:
        """The cells this job produces."""
        return [self.spec]


Job = ClassifyJob | GeneratedCorruptionJob | AttackJob | StabilityJob  # and engine.segmentation.SegmentationJob


#: At most this many distinct attack log lines are kept with a cell (warnings first).
MAX_LOG_LINES = 200


def summarize_log(lines: Sequence[str]) -> list[str]:
    """Return the distinct log lines of a cell's batches, warnings first, at most :data:`MAX_LOG_LINES`."""
    distinct = list(dict.fromkeys(lines))
    warnings = [line for line in distinct if line.startswith("warning: ")]
    others = [line for line in distinct if not line.startswith("warning: ")]
    return (warnings + others)[:MAX_LOG_LINES]


def cell_seed(seed: int, *parts: Any) -> int:
    """Derive a stable 31-bit seed for one cell and batch from the run seed and the cell's coordinates."""
    return zlib.crc32("|".join(str(p) for p in (seed, *parts)).encode()) & 0x7FFFFFFF


class Engine:
    """Runs jobs against a model, writes finished cells to a store, reports progress through a callback.

    Distributed (``options.dist``): each rank runs its canonical batches, rank 0 gathers the parts and writes;
    ``todo`` (cell keys decided by rank 0) replaces the store look-up on every rank; ``store`` may be None on
    the other ranks.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        store: Any,
        provenance: dict[str, Any],
        run_id: str,
        options: EngineOptions,
        progress: Any = None,
        todo: set[str] | None = None,
    ) -> None:
        self.model = model
        self.store = store
        self.provenance = provenance
        self.run_id = run_id
        self.options = options
        self.progress = progress
        self.todo = todo
        self.written: list[CellSpec] = []
        self.skipped: list[CellSpec] = []
        self.resumed_batches = 0  # batches read back from journals instead of computed
        self.notes: list[str] = []  # what the terminal should say about the cells written (skipped images, ...)

    # -- helpers -------------------------------------------------------------------------------------------
    def _forward(self, images: Tensor) -> Tensor:
        images = images.to(self.options.device, non_blocking=True)
        if self.options.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.options.device, self.options.precision):
            return self.model(images).float()

    def _logits(self, images: Tensor, source: BatchSource, spec: CellSpec, number: int, batch: Batch) -> Tensor:
        """Forward a batch, mask the logits to the dataset's classes, refuse non-finite ones."""
        logits = self._forward(images).cpu()
        check_finite(logits, spec, number, batch.sample_ids, classes=source.class_indices)
        return mask_logits(logits, source.class_indices)

    def _rank_world(self) -> tuple[int, int]:
        dist, part = self.options.dist, self.options.part
        if part is None:
            return dist.rank, dist.world_size
        return sample_shard_rank(part.index, part.count, dist.rank, dist.world_size)

    def _journal(self, specs: Sequence[CellSpec], source: BatchSource, label: str) -> BatchJournal | None:
        if self.options.journal_root is None:
            return None
        context = {"batch_size": self.options.batch_size, "seed": self.options.seed,
                   "precision": self.options.precision, "decode": self.options.decode,
                   "channels_last": self.options.channels_last, "dataset": source.fingerprint(),
                   "samples": len(source), **self.options.journal_context}
        return BatchJournal(self.options.journal_root, [s.key() for s in specs], context, label)

    def _pass(self, specs: Sequence[CellSpec], source: BatchSource, compute: Callable[[int, Batch], BatchPart],
              label: str, units: int = 1,
              journal_cells: Sequence[CellSpec] | None = None) -> tuple[list[BatchPart], BatchJournal | None]:
        """Run ``compute`` on this rank's canonical batches, reading finished ones back from the journal.

        The journal is that of ``journal_cells`` (default ``specs``: all the job's cells, so that a pass whose
        cells were partly written resumes from it); batches are read back only if they hold rows for every cell
        of ``specs``. Each new batch is journaled as soon as it is computed; ``units`` is the progress per image.
        Non-finite logits on any rank, or no readable image on any rank, stop every rank with the same error.
        """
        journal = self._journal(journal_cells or specs, source, label)
        rank, world = self._rank_world()
        mine = {number for number, _ in canonical_batches(len(source), self.options.batch_size, rank, world)}
        kept = journal.load(needed=[s.key() for s in specs]) if journal is not None else {}
        parts = [BatchPart.from_json(n, payload) for n, payload in kept.items() if n in mine]
        for part in parts:
            self._tick(label, (part.loaded + len(part.skipped)) * units, len(source) * units)
        done = frozenset(p.number for p in parts)
        failure: UnscorableBatchError | None = None
        try:
            for number, batch in source.shard_batches(self.options.batch_size, rank, world, self.options.loading,
                                                      skip=done):
                part = compute(number, batch)
                if journal is not None:
                    journal.add(number, part.to_json())
                parts.append(part)
                self._tick(label, (len(batch) + len(batch.skipped)) * units, len(source) * units)
        except UnscorableBatchError as exc:
            failure = exc
        parts.sort(key=lambda p: p.number)
        reasons = sorted({reason for p in parts for _, reason in p.skipped})
        shared = all_gather(self.options.dist, (None if failure is None else str(failure),
                                                sum(p.loaded for p in parts), reasons))
        failed = [message for message, _, _ in shared if message]
        loaded = sum(n for _, n, _ in shared)
        if failed or (loaded == 0 and self.options.part is None and len(source) > 0):
            if journal is not None and self.options.dist.is_main:  # every rank has stopped computing
                journal.discard()  # a broken model's batches, or empty ones: of no use to a later run
            if failed:
                raise failure if failure is not None else NonFiniteOutputError(failed[0])
            raise no_readable_images(specs[0], [r for _, _, rs in shared for r in rs], len(source))
        return parts, journal

    @staticmethod
    def _part(number: int, batch: Batch, rows: dict[str, list[dict[str, Any]]],
              log: list[str] | None = None) -> BatchPart:
        return BatchPart(number, rows, list(batch.skipped), list(batch.converted), len(batch), list(log or []))

    def _finish(self, specs: Sequence[CellSpec], parts: list[BatchPart], source: BatchSource, started: float,
                extra: dict[str, Any] | None = None, journal: BatchJournal | None = None) -> None:
        """Gather the parts on rank 0 and write each cell there (records in dataset order, one load report).

        The journal of the pass is removed once its cells are written.
        """
        gathered = gather_to_main(self.options.dist, parts)
        if gathered is None:  # not rank 0: rank 0 writes
            self.written.extend(specs)
            return
        ordered = sorted((p for rank_parts in gathered for p in rank_parts), key=lambda p: p.number)
        report = LoadReport()
        report.add_missing(source.missing())
        for part in ordered:
            report.skipped.extend(part.skipped)
            report.converted.update(mode for _, mode in part.converted)
            report.loaded += part.loaded
        part_meta = None if self.options.part is None else self._part_meta(ordered, source)
        logs = [line for part in ordered for line in part.log]
        if logs:
            extra = {**(extra or {}), "attack_log": summarize_log(logs)}
        resumed = sum(p.resumed for p in ordered)
        self.resumed_batches += resumed
        if resumed:
            extra = {**(extra or {}), "resumed_batches": resumed}
        for spec in specs:
            rows = [row for part in ordered for row in part.rows.get(spec.key(), [])]
            self._write(spec, rows, source, report, started, extra, part_meta)
        if report.skipped:
            where = specs[0].slug() if len(specs) == 1 else f"{len(specs)} cells on {specs[0].dataset}"
            self.notes.append(f"Skipped images in {where}: {report.summary()}.")
        if journal is not None:
            journal.discard()

    def _part_meta(self, ordered: list[BatchPart], source: BatchSource) -> dict[str, Any]:
        """Describe a sample shard's part: which batches it holds and their load accounting (for the merge)."""
        part = self.options.part
        assert part is not None
        loads = [{"number": p.number, "skipped": [list(x) for x in p.skipped],
                  "converted": [list(x) for x in p.converted]} for p in ordered if p.skipped or p.converted]
        return {"index": part.index, "count": part.count, "plan_hash": part.plan_hash,
                "batch_size": self.options.batch_size, "total": len(source),
                "batches": [p.number for p in ordered], "loaded": sum(p.loaded for p in ordered),
                "batch_loads": loads, "missing": [list(x) for x in source.missing()]}

    def _write(self, spec: CellSpec, rows: list[dict[str, Any]], source: BatchSource, report: LoadReport,
               started: float, extra: dict[str, Any] | None = None, part: dict[str, Any] | None = None) -> None:
        payload = {"seconds": round(time.perf_counter() - started, 3), "batch_size": self.options.batch_size,
                   "precision": self.options.precision, "dataset_fingerprint": source.fingerprint(),
                   "load_report": report.as_dict()}
        if self.options.dist.enabled:
            payload["world_size"] = self.options.dist.world_size
        payload.update(extra or {})
        if part is not None:
            frame = records_frame(rows) if rows else records_frame([]).reindex(
                columns=list(required_columns(spec.condition, spec.params.get("task"))))
            self.store.write_part(spec, frame, self.provenance, extra=payload, part=part, run_id=self.run_id)
        else:
            self.store.write_cell(spec, records_frame(rows), self.provenance, extra=payload, run_id=self.run_id)
        self.written.append(spec)

    def _tick(self, cell: str, advance: int, total: int) -> None:
        if self.progress is not None:
            self.progress(cell, advance, total)

    def pending(self, job: Job) -> list[CellSpec]:
        """Return the cells of ``job`` that still have to be computed."""
        if self.todo is not None:
            return [s for s in job.specs if s.key() in self.todo]
        if self.options.force:
            return job.specs
        part = self.options.part
        if part is not None:
            return [s for s in job.specs if self.store.read_part(s, part.index, part.count, part.plan_hash) is None]
        return [s for s in job.specs if not self.store.has(s)]

    # -- jobs ----------------------------------------------------------------------------------------------
    def run(self, jobs: Sequence[Job]) -> None:
        """Run every job, skipping finished cells (unless forced)."""
        from robustbench_rpc.engine.segmentation import SegmentationJob, run_segmentation

        for job in jobs:
            todo = self.pending(job)
            self.skipped.extend(s for s in job.specs if s not in todo)
            if not todo:
                continue
            if isinstance(job, SegmentationJob):
                run_segmentation(self, job, set(s.key() for s in todo))
            elif isinstance(job, ClassifyJob):
                self._classify(job)
            elif isinstance(job, GeneratedCorruptionJob):
                self._generated(job, set(s.key() for s in todo))
            elif isinstance(job, StabilityJob):
                self._stability(job)
            else:
                self._attack(job)

    def _classify(self, job: ClassifyJob) -> None:
        started = time.perf_counter()
        key = job.spec.key()

        def compute(number: int, batch: Batch) -> BatchPart:
            rows: list[dict[str, Any]] = []
            if len(batch):
                images = job.transform(batch.images) if job.transform else batch.images
                logits = self._logits(images, job.source, job.spec, number, batch)
                rows = records_from_logits(logits, batch.labels, batch.sample_ids, batch.indices,
                                           batch.is_ood if job.ood else None)
            return self._part(number, batch, {key: rows})

        parts, journal = self._pass([job.spec], job.source, compute, job.spec.slug())
        self._finish([job.spec], parts, job.source, started, journal=journal)

    def _generated(self, job: GeneratedCorruptionJob, todo: set[str]) -> None:
        from robustbench_rpc.corruptions import corrupt, jpeg_roundtrip

        cells = [c for c in job.cells if c[0].key() in todo]
        started = time.perf_counter()
        seed = self.options.seed
        device = self.options.device
        draws_on = device if job.draws_on_device else torch.device("cpu")

        def compute(number: int, batch: Batch) -> BatchPart:
            rows: dict[str, list[dict[str, Any]]] = {spec.key(): [] for spec, _, _ in cells}
            if len(batch):
                clean = batch.images.to(device, non_blocking=True)  # corruptions run on the model's device
                start = int(batch.indices[0])
                for spec, name, severity in cells:
                    # the cell's own seed (a coordinate with --seeds; the run's seed otherwise)
                    own = spec.params.get("seed", seed)
                    gen = torch.Generator(draws_on).manual_seed(cell_seed(own, name, severity, start))
                    images = corrupt(clean, name, severity, generator=gen)
                    if job.jpeg_quality is not None:
                        images = jpeg_roundtrip(images, job.jpeg_quality)
                    if images.dtype == torch.uint8:
                        images = images.float() / 255.0
                    if job.to_model is not None:
                        images = job.to_model(images)
                    logits = self._logits(images, job.source, spec, number, batch)
                    rows[spec.key()] = records_from_logits(logits, batch.labels, batch.sample_ids, batch.indices)
            return self._part(number, batch, rows)

        specs = [spec for spec, _, _ in cells]
        parts, journal = self._pass(specs, job.source, compute, "generated corruptions", units=len(cells),
                                    journal_cells=job.specs)
        self._finish(specs, parts, job.source, started, {"generated": True}, journal)

    def _attack(self, job: AttackJob) -> None:
        from robustbench_rpc.attacks import run_attack

        started = time.perf_counter()
        key = job.spec.key()

        def compute(number: int, batch: Batch) -> BatchPart:
            batch_rows: list[dict[str, Any]] = []
            log: list[str] = []
            if len(batch):
                start = int(batch.indices[0])
                # a stochastic cell's own seed (a coordinate of the cell, --seeds) is the one its draws follow
                seed = cell_seed(job.spec.params.get("seed", self.options.seed), job.spec.condition_key(), start)
                result = run_attack(self.model, batch.images, batch.labels, job.attack, seed=seed,
                                    compat=job.compat, surrogate=job.surrogate,
                                    final_precision=self.options.precision)
                for what, logits in (("clean", result.clean_logits), ("adversarial", result.adv_logits)):
                    check_finite(logits.detach().float().cpu(), job.spec, number, batch.sample_ids, what,
                                 job.source.class_indices)
                log = result.log
                batch_rows = result.records(batch.labels, sample_ids=batch.sample_ids)
                for row, index in zip(batch_rows, batch.indices.tolist(), strict=True):
                    row["index"] = int(index)
                if job.save_adv is not None:
                    from pathlib import Path

                    from robustbench_rpc.attacks import save_adversarial

                    save_adversarial(Path(job.save_adv) / job.spec.slug(), result, batch.images, batch.labels,
                                     index_offset=start, sample_ids=batch.sample_ids, n_png=8)
            return self._part(number, batch, {key: batch_rows}, log)

        parts, journal = self._pass([job.spec], job.source, compute, job.spec.slug())
        self._finish([job.spec], parts, job.source, started, {"attack": job.attack.label()}, journal)

    def _stability(self, job: StabilityJob) -> None:
        """Records of the first clean pass, and whether repeats or tiny noise changed each prediction."""
        started = time.perf_counter()
        key = job.spec.key()
        classes = job.source.class_indices

        def compute(number: int, batch: Batch) -> BatchPart:
            rows: list[dict[str, Any]] = []
            if len(batch):
                images = batch.images.to(self.options.device)
                raw = self._forward(images)
                check_finite(raw.cpu(), job.spec, number, batch.sample_ids, classes=classes)
                first = mask_logits(raw, classes)
                pred = first.argmax(dim=1)
                changed = torch.zeros(len(images), dtype=torch.bool, device=first.device)
                diff = torch.zeros(len(images), device=first.device)
                for _ in range(job.repeats - 1):
                    again = mask_logits(self._forward(images), classes)
                    changed |= again.argmax(dim=1) != pred
                    diff = torch.maximum(diff, (again - first).abs().amax(dim=1))
                gen = torch.Generator().manual_seed(cell_seed(self.options.seed, job.spec.condition_key(),
                                                              int(batch.indices[0])))
                noise = (torch.rand(images.shape, generator=gen) * 2 - 1) * job.noise_linf
                noisy = (images + noise.to(images.device, images.dtype)).clamp(0.0, 1.0)
                noise_changed = mask_logits(self._forward(noisy), classes).argmax(dim=1) != pred
                rows = records_from_logits(first.cpu(), batch.labels, batch.sample_ids, batch.indices)
                for row, c, n, d in zip(rows, changed.tolist(), noise_changed.tolist(), diff.tolist(), strict=True):
                    row.update(pred_changed=bool(c), noise_pred_changed=bool(n), max_logit_diff=float(d))
            return self._part(number, batch, {key: rows})

        parts, journal = self._pass([job.spec], job.source, compute, job.spec.slug())
        self._finish([job.spec], parts, job.source, started, {"probe": "stability"}, journal)
