"""PGD-20 throughput through run_attack vs torchattacks called directly on the same model and batch.

Rows: torchattacks PGD alone; torchattacks PGD plus the clean and adversarial forward passes any evaluation needs
(the like-for-like baseline); run_attack without the audit's bookkeeping (no trace, eot_iter=1: the pipeline before
attack traces); run_attack as it runs by default (seeding, budget check, clamping, logits, the attack trace, the
automatic-EOT stability pass and the best-iterate rule). Repetitions are interleaved and the median is reported.
Usage: python benchmarks/attacks.py [--batch 32] [--size 32] [--reps 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchattacks
from torch import nn

from robustbench_rpc.attacks import build_attack_spec, run_attack, runner
from robustbench_rpc.models.attention import RPCConfig, SymmetricAttention


class SmallRPCViT(nn.Module):
    """Patch embedding, ``depth`` RPC symmetric-attention blocks with MLPs, mean pooling, linear head."""

    def __init__(self, size: int, dim: int = 64, depth: int = 2, n_classes: int = 100) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.ModuleList()
        for i in range(depth):
            rpc = RPCConfig(iters=2, lam=4.0) if i == 0 else None
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "n1": nn.LayerNorm(dim),
                        "attn": SymmetricAttention(dim, num_heads=4, rpc=rpc),
                        "n2": nn.LayerNorm(dim),
                        "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
                    }
                )
            )
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed((x - 0.5) / 0.25).flatten(2).transpose(1, 2)
        for b in self.blocks:
            t = t + b["attn"](b["n1"](t))
            t = t + b["mlp"](b["n2"](t))
        return self.head(t.mean(1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SmallRPCViT(args.size).to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad():
        labels = model(images).argmax(1)
    eps = 4 / 255
    spec = build_attack_spec("pgd", "Linf", eps, steps=20, rel_stepsize=0.15)

    def direct() -> None:
        torch.manual_seed(0)
        torchattacks.PGD(model, eps=eps, alpha=0.15 * eps, steps=20)(images, labels)

    def direct_eval() -> None:
        with torch.no_grad():
            model(images)
        torch.manual_seed(0)
        adv = torchattacks.PGD(model, eps=eps, alpha=0.15 * eps, steps=20)(images, labels)
        with torch.no_grad():
            model(adv)

    untraced_spec = build_attack_spec("pgd", "Linf", eps, steps=20, rel_stepsize=0.15, eot_iter=1)

    def untraced() -> None:
        budget = runner._pixel_budget
        runner._pixel_budget = lambda images, spec: None  # no in-budget test: no tracer
        try:
            run_attack(model, images, labels, untraced_spec, seed=0)
        finally:
            runner._pixel_budget = budget

    def ours() -> None:
        run_attack(model, images, labels, spec, seed=0)

    runs = {
        "torchattacks PGD only": direct,
        "torchattacks PGD + clean/adv eval": direct_eval,
        "run_attack, no trace, eot_iter=1": untraced,
        "run_attack (traced, default)": ours,
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["torchattacks PGD + clean/adv eval"])
    print(
        f"PGD-20 Linf eps=4/255, batch {args.batch}, {args.size}x{args.size}, device {device}, "
        f"torch threads {torch.get_num_threads()}, {args.reps} interleaved reps (median)"
    )
    print(f"{'pipeline':36s} {'s/batch':>9s} {'img/s':>9s} {'vs baseline':>12s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:36s} {median:9.4f} {args.batch / median:9.1f} {100 * (median / base - 1):+11.1f}%")
    traced = statistics.median(times["run_attack (traced, default)"])
    plain = statistics.median(times["run_attack, no trace, eot_iter=1"])
    print(f"trace + EOT check + best iterate overhead vs the untraced pipeline: {100 * (traced / plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
