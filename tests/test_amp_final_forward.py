"""``--amp`` for the final forward on adversarial images: bf16 on the CPU, fp16 refused off CUDA, in the identity."""

from __future__ import annotations

import pytest
import torch
from test_attack_cli import MODEL, cli
from test_attacks_helpers import single_thread, tiny_batch, tiny_convnet  # noqa: F401

from robustbench_rpc.attacks import build_attack_spec, run_attack
from robustbench_rpc.attacks.runner import score
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.store import ResultsStore


def test_final_forward_in_bf16_scores_the_same_adversarial_images():
    model = tiny_convnet()
    images, labels = tiny_batch(6, model=model)
    spec = build_attack_spec("pgd", "Linf", 4 / 255, steps=3)
    fp32 = run_attack(model, images, labels, spec, seed=0)
    bf16 = run_attack(model, images, labels, spec, seed=0, final_precision="bf16")
    assert torch.equal(fp32.adv, bf16.adv)  # the attack itself is unchanged
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(fp32.adv).float()
    assert torch.equal(bf16.adv_logits, expected)
    assert bf16.adv_logits.dtype == torch.float32
    assert not torch.equal(bf16.adv_logits, fp32.adv_logits)


def test_fp16_is_refused_on_the_cpu():
    model = tiny_convnet()
    images, _ = tiny_batch(2)
    with pytest.raises(UserError, match="--amp fp16 autocasts the final forward on a CUDA GPU, but this run is on "
                                        "cpu; use --amp bf16"):
        score(model, images, "fp16")


def test_cli_amp_fp16_refused_before_anything_is_written_and_bf16_recorded(tmp_path, capsys):
    args = ["attack", *MODEL, "--dataset", "digits", "--attack", "fgsm", "--eps", "4/255", "--limit", "4", "-q",
            "--device", "cpu"]
    code, _, err = cli(capsys, *args, "--amp", "fp16", "--out", str(tmp_path / "fp16"))
    assert code != 0
    assert "--amp fp16 autocasts on a CUDA GPU (as the official evaluation), but this run is on cpu" in err
    assert "Traceback" not in err and not (tmp_path / "fp16").exists()
    code, _, err = cli(capsys, *args, "--amp", "bf16", "--out", str(tmp_path / "bf16"))
    assert code == 0, err
    [(spec, records, _)] = list(ResultsStore(tmp_path / "bf16").iter_cells())
    assert spec.model_options["precision"] == "bf16"  # part of the model's identity
    assert len(records) == 4
