"""Benchmark: our RPC attention (SDPA inside) against a materialising PAP baseline and plain symmetric attention.

Run: ``python benchmarks/attention.py [--threads 2] [--repeats 5]``. Prints time and peak memory per variant at
DeiT-tiny shapes (batch 32, 3 heads of 64) with 197 and 577 tokens, as ratios against the materialising baseline.
Peak memory is measured in a fresh subprocess per variant (increase of the process's maximum resident set size
during the call), since torch's CPU allocator keeps no statistics.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from robustbench_rpc.models.attention import principal_attention_pursuit, symmetric_attention


def materialising_pap(k: torch.Tensor, v: torch.Tensor, iters: int, lam: float, scale: float, embed_dim: int):
    """The plain formulation of PAP: builds the N x N attention matrix at every evaluation (the baseline)."""
    n = k.shape[-2]
    mu = n * embed_dim / 4 / k.abs().sum(dim=(-2, -1), keepdim=True)
    low = torch.zeros_like(k)
    dual = torch.zeros_like(k)
    for step in range(iters):
        s = k - low + dual / mu
        s = torch.where(s >= lam * mu, s - lam * mu, torch.where(s <= -lam * mu, s + lam * mu, torch.zeros_like(s)))
        k2 = k - s - dual / mu
        attn = ((k2 @ k2.transpose(-2, -1)) * scale).softmax(dim=-1)
        low = attn @ v
        if step < iters - 1:
            dual = dual + mu * (k - low - s)
    return low


def plain_materialising(k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric attention that materialises the attention matrix."""
    return ((k @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v


def run_variant(variant: str, tokens: int, iters: int, batch: int, repeats: int) -> dict:
    """Time one variant (median of ``repeats``) and measure its peak memory increase in this process."""
    heads, head_dim = 3, 64
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(batch, heads, tokens, head_dim, generator=gen)
    v = torch.randn(batch, heads, tokens, head_dim, generator=gen)
    scale = head_dim**-0.5
    embed = heads * head_dim

    def call():
        if variant == "rpc_sdpa":
            return principal_attention_pursuit(k, v, iters=iters, lam=4.0, scale=scale, embed_dim=embed)
        if variant == "rpc_materialising":
            return materialising_pap(k, v, iters, 4.0, scale, embed)
        if variant == "symmetric_sdpa":
            return symmetric_attention(k, v, scale)
        return plain_materialising(k, v, scale)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        call()
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_mib": peak_kib / 1024}


def main() -> None:
    """Run every variant in its own subprocess and print the ratio table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        variant, tokens, iters = args.child
        print(json.dumps(run_variant(variant, int(tokens), int(iters), args.batch, args.repeats)))
        return
    rows = []
    for tokens in (197, 577):
        for iters in (4, 2):
            result = {}
            for variant in ("rpc_materialising", "rpc_sdpa", "symmetric_sdpa", "symmetric_materialising"):
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats),
                       "--batch", str(args.batch), "--child", variant, str(tokens), str(iters)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                result[variant] = json.loads(out.strip().splitlines()[-1])
            base = result["rpc_materialising"]
            for variant, r in result.items():
                rows.append((tokens, iters, variant, r["seconds"] * 1e3, base["seconds"] / r["seconds"],
                             r["peak_mib"], r["peak_mib"] / max(base["peak_mib"], 1e-9)))
    print(f"RPC attention benchmark: batch {args.batch}, 3 heads x 64, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'tokens':>6} {'n':>2} {'variant':<24} {'ms':>9} {'speedup':>8} {'peak MiB':>9} {'mem ratio':>9}")
    for tokens, iters, variant, ms, speed, mib, mem in rows:
        print(f"{tokens:>6} {iters:>2} {variant:<24} {ms:>9.1f} {speed:>7.2f}x {mib:>9.1f} {mem:>9.2f}")
    print("speedup and mem ratio are relative to rpc_materialising (same tokens and n); symmetric_* run one "
          "attention evaluation and are shown for scale.")


if __name__ == "__main__":
    main()
