"""``import robustbench_rpc`` makes the package a timm plugin: every model name enters timm's registry (fresh
processes)."""

from __future__ import annotations

import json
import subprocess
import sys

#: One builder per (family, attention) of the package, written out here rather than read from the catalogue.
ONE_PER_FAMILY = {
    "symvit_tiny_patch16_224": "SymViT",
    "rpc_symvit_tiny_patch16_224": "SymViT",
    "symvit_digits_patch8_32": "SymViT",
    "fan_tiny_12_p16_224": "FAN",
    "fan_tiny_8_p4_hybrid": "FAN",
    "symfan_tiny_12_p16_224": "FAN",
    "symfan_tiny_8_p4_hybrid": "FAN",
    "rpc_fan_tiny_12_p16_224": "FAN",
    "rpc_fan_tiny_8_p4_hybrid": "FAN",
    "scaled_vit_tiny_patch16_224": "KernelViT",
    "scaled_alpha_vit_tiny_patch16_224": "KernelViT",
    "kpca_vit_tiny_patch16_224": "KernelViT",
}


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_bare_import_registers_every_family_in_timm() -> None:
    out = _python(
        "import sys, json\n"
        "import robustbench_rpc\n"
        "assert 'torch' not in sys.modules, 'the bare import loaded torch'\n"
        "import timm, torch\n"
        f"names = {sorted(ONE_PER_FAMILY)!r}\n"
        "built = {}\n"
        "with torch.device('meta'):\n"
        "    for n in names:\n"
        "        built[n] = type(timm.create_model(n)).__name__\n"
        "rpc = timm.create_model('rpc_symvit_digits_patch8_32', rpc_iters=2)\n"
        "print(json.dumps({'built': built, 'listed': timm.list_models(),\n"
        "                  'rpc_iters': rpc.blocks[0].attn.rpc.iters}))\n"
    )
    result = json.loads(out)
    assert result["built"] == ONE_PER_FAMILY
    assert result["rpc_iters"] == 2  # the option reached the attention
    from robustbench_rpc.models.registry import CATALOGUE, ensure_registered

    ensure_registered()
    assert set(CATALOGUE) <= set(result["listed"])  # every catalogue name, not only one per family


def test_import_after_timm_registers_at_once() -> None:
    out = _python("import timm\nimport robustbench_rpc\nprint(timm.is_model('rpc_fan_small_12_p16_224'),"
                  " timm.is_model('symvit_base_patch16_224'))")
    assert out.split() == ["True", "True"]


def test_without_the_package_timm_does_not_know_the_names() -> None:
    out = _python("import timm\nprint(timm.is_model('rpc_symvit_tiny_patch16_224'))")
    assert out.strip() == "False"  # the registration above is the package's doing
