"""``run --dry-run``: the plan of a spec (calls, cells, images) and its time, estimated from a throughput probe.

The probe times, per model variant, three forward passes and two forward + backward passes on a batch of random
inputs of the model's size (the fastest of each: the least disturbed by other work on the machine). A cell's cost
is its images times its forward-pass equivalents: 1 for clean, corrupted and out-of-distribution cells; for attacks
the passes their settings imply (a gradient step costs one forward + backward, a query one forward; AutoAttack
counts APGD-CE, APGD-T on 9 targets and Square's budget, an upper bound since it attacks only what is still
robust). The estimate is a guide, not a measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.spec.run import Call, model_kwargs, plan_calls, run_kwargs, validate, variant_name
from robustbench_rpc.spec.schema import BenchmarkSpec


@dataclass
class PlannedCall:
    """One call of the plan with its cells, images and estimated seconds."""

    model: str
    what: str
    cells: int
    images: int
    seconds: float


def attack_passes(params: dict[str, Any], backward: float) -> float:
    """Forward-pass equivalents per image of an attack cell (``backward``: cost of forward + backward / forward)."""
    name, options = params.get("name"), params.get("options", {})
    steps = float(options.get("steps", 1) or 1)
    restarts = float(options.get("restarts", 1) or 1)
    if name in ("pgd", "apgd-ce", "apgd-dlr", "sld", "transfer"):
        cost = steps * restarts * backward
    elif name == "fgsm":
        cost = backward
    elif name == "cw":
        cost = steps * backward * (5 if params.get("threat_model") == "paper" else 1)
    elif name == "spsa":
        cost = 2 * float(options.get("samples", 128)) * steps
    elif name == "square":
        cost = float(options.get("queries", 5000)) * restarts
    elif name == "autoattack":
        cost = 100 * backward * 10 + 5000
    else:
        cost = 0.0
    return cost + 2  # the clean and the final forward


def probe(model: Any, batch_size: int, device: Any) -> tuple[float, float]:
    """Return (images per second forward, forward + backward time / forward time) on random inputs."""
    import torch

    size = model.preprocessing.get("input_size", (3, 224, 224))
    x = torch.rand(batch_size, *size, device=device)
    model = model.to(device).eval()
    def timed(step: Any) -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    with torch.no_grad():
        model(x)  # warm-up
        forward = min(timed(lambda: model(x)) for _ in range(3))  # the least disturbed of three passes
    x.requires_grad_(True)
    both = min(timed(lambda: model(x).sum().backward()) for _ in range(2))
    return batch_size / max(forward, 1e-9), max(both / max(forward, 1e-9), 1.0)


def _jobs(call: Call, identity: dict[str, Any], model: Any, device: Any, spec: BenchmarkSpec) -> list[Any]:
    """Plan the call's cells as the command would (without running them)."""
    from pathlib import Path

    from robustbench_rpc.engine.attack_plan import build_attack_jobs, check_seeds
    from robustbench_rpc.engine.plan import DataPaths, SampleSelection, build_evaluation_jobs, parse_suite

    k = call.kwargs
    seed, batch = int(spec.run.get("seed", 0)), int(spec.run.get("batch_size", 64))
    if call.kind == "evaluate":
        root = k["data_root"]
        return build_evaluation_jobs(identity, parse_suite(k["suite"]), DataPaths(Path(root) if root else None,
                                     dict(k["paths"])), model.preprocessing, SampleSelection(k["subset"], k["limit"]),
                                     corruptions=k["corruptions"], severities=k["severities"],
                                     allow_missing=k["allow_missing"], labels_file=k["labels_file"],
                                     class_list=k["class_list"], seed=seed, jpeg=k["jpeg"], batch_size=batch,
                                     seeds=check_seeds(k["seeds"]) if k["seeds"] is not None else None)
    options = dict(k["attack_options"])
    if k["attack_dtype"]:
        options["attack_dtype"] = k["attack_dtype"]
    return build_attack_jobs(identity, model.preprocessing, attacks=k["attacks"], eps=k["eps"], norm=k["norm"],
                             protocol=k["protocol"], attack_options=options, compat=k["compat"],
                             dataset=k["dataset"], data=k["data"], limit=k["limit"], subset=k["subset"],
                             labels_file=k["labels_file"], class_list=k["class_list"], save_adv=None, seed=seed,
                             batch_size=batch, surrogate=lambda: (None, {"model": str(k["surrogate"])}),
                             seeds=k["seeds"])


def dry_run(spec: BenchmarkSpec) -> list[PlannedCall]:
    """Return the plan of ``spec`` with cells, images and estimated seconds per call (nothing is run)."""
    from robustbench_rpc.api import ModelRequest
    from robustbench_rpc.engine.device import resolve_device
    from robustbench_rpc.engine.plan import total_samples

    validate(spec, load_models=False)
    options = run_kwargs(spec)
    device = resolve_device(None if options["device"] == "auto" else options["device"])
    planned: list[PlannedCall] = []
    probed: dict[str, tuple[float, float]] = {}
    for call in plan_calls(spec):
        m = model_kwargs(call.variant)
        request = ModelRequest(m["model"], m["checkpoint"], m["model_name"], m["model_options"],
                               m["trust_checkpoint"], m["use_ema"], m["num_classes"])
        try:
            model, _, identity = request.load(options["seed"])
        except UserError as exc:
            where = spec.source.where("models", call.variant.entry, "model")
            raise UserError(f"The model at {where} does not load: {exc}") from None
        key = repr(sorted(m.items(), key=str))
        if key not in probed:
            probed[key] = probe(model, min(int(options["batch_size"]), 16), device)
        rate, backward = probed[key]
        jobs = _jobs(call, identity, model, device, spec)
        cells = sum(len(job.specs) for job in jobs)
        images = total_samples(jobs)
        passes = 0.0
        for job in jobs:
            for cell in job.specs:
                per = attack_passes(cell.params, backward) if cell.condition == "attack" else 1.0
                passes += per * len(job.source)
        planned.append(PlannedCall(variant_name(call.variant), call.describe(), cells, images, passes / rate))
    return planned


def format_plan(planned: list[PlannedCall]) -> str:
    """Return the plan as text: one line per call, then the totals."""
    lines = [f"{'model':<34} {'call':<44} {'cells':>6} {'images':>8} {'estimated':>10}"]
    for p in planned:
        lines.append(f"{p.model[:34]:<34} {p.what[:44]:<44} {p.cells:>6} {p.images:>8} {_duration(p.seconds):>10}")
    total = sum(p.seconds for p in planned)
    lines.append(f"{len(planned)} call(s), {sum(p.cells for p in planned)} cell(s), "
                 f"{sum(p.images for p in planned)} image evaluation(s), estimated {_duration(total)} "
                 "(from a throughput probe on this machine)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
