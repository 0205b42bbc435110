"""Segmentation attacks: budgets, effect, FGSM and SegPGD against direct computations, ignored pixels, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_rpc.attacks.segmentation import (
    SEGMENTATION_ATTACKS,
    segmentation_attack,
    segmentation_loss,
    segpgd_lambda,
)
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.segmentation import load_segmentation_model

EPS = 8 / 255


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = load_segmentation_model("segmenter_symvit_digits", shipped_weights=False)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        masks = model(images).argmax(1)  # the clean prediction: clean pixel accuracy is 1
    masks[:, :4, :4] = 255
    return model, images, masks


def pixel_accuracy(model, images, masks) -> float:
    with torch.no_grad():
        pred = model(images).argmax(1)
    valid = masks != 255
    return float((pred == masks)[valid].float().mean())


@pytest.mark.parametrize("name", SEGMENTATION_ATTACKS)
def test_budget_holds_and_accuracy_drops(setup, name):
    model, images, masks = setup
    adv = segmentation_attack(model, images, masks, name, EPS, steps=5,
                              generator=torch.Generator().manual_seed(0))
    assert float((adv - images).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert pixel_accuracy(model, images, masks) == 1.0
    assert pixel_accuracy(model, adv, masks) < 0.9


def test_fgsm_is_one_signed_gradient_step(setup):
    model, images, masks = setup
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), masks, ignore_index=255)  # mean over the labelled pixels
    (grad,) = torch.autograd.grad(loss, x)
    expected = (images + EPS * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(segmentation_attack(model, images, masks, "fgsm", EPS), expected)


def test_ignored_pixels_have_no_influence(setup):
    model, images, masks = setup
    region = torch.zeros_like(masks, dtype=torch.bool)
    region[:, 8:24, 8:24] = True
    first = masks.clone()
    first[region] = 255
    second = first.clone()
    second[first == 255] = 254  # other labels on the same ignored pixels
    a = segmentation_attack(model, images, first, "pgd", EPS, steps=3, generator=torch.Generator().manual_seed(3))
    b = segmentation_attack(model, images, second, "pgd", EPS, steps=3, ignore_index=254,
                            generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    labelled = masks.clone()
    labelled[region] = (masks[region] + 1) % 11  # the same pixels labelled: now they count
    c = segmentation_attack(model, images, labelled, "pgd", EPS, steps=3, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(a, c)


def test_segpgd_weighting_matches_the_paper(setup):
    model, images, masks = setup
    assert segpgd_lambda(1, 10) == 0.0 and segpgd_lambda(10, 10) == pytest.approx(9 / 20)
    adv = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    with torch.no_grad():
        logits = model(adv)
    ce = F.cross_entropy(logits, masks, ignore_index=255, reduction="none")
    valid = masks != 255
    correct = (logits.argmax(1) == masks) & valid
    wrong = (logits.argmax(1) != masks) & valid
    assert correct.any() and wrong.any()
    lam = segpgd_lambda(3, 4)
    direct = ((1 - lam) * ce[correct].sum() + lam * ce[wrong].sum()) / valid.sum()
    torch.testing.assert_close(segmentation_loss(logits, masks, 255, lam), direct)
    # one SegPGD step (lambda_1 = 0: only the correctly classified pixels push) from the clean images
    x = images.clone().requires_grad_(True)
    out = model(x)
    ce = F.cross_entropy(out, masks, ignore_index=255, reduction="none")
    keep = ((out.argmax(1) == masks) & valid).float()
    (grad,) = torch.autograd.grad((ce * keep).sum() / valid.sum(), x)
    step = EPS / 4
    expected = (images + step * grad.sign()).clamp(images - EPS, images + EPS).clamp(0, 1)
    got = segmentation_attack(model, images, masks, "segpgd", EPS, steps=1, random_start=False)
    torch.testing.assert_close(got, expected)


def test_random_start_is_seeded_and_errors_are_sentences(setup):
    model, images, masks = setup
    a = segmentation_attack(model, images, masks, "segpgd", EPS, steps=2, generator=torch.Generator().manual_seed(5))
    b = segmentation_attack(model, images, masks, "segpgd", EPS, steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(segmentation_attack(model, images, masks, "pgd", 0.0), images)
    with pytest.raises(UserError, match="Unknown segmentation attack 'cw'; expected one of pgd, fgsm, segpgd"):
        segmentation_attack(model, images, masks, "cw", EPS)
    with pytest.raises(UserError, match=r"masks have shape \[2, 16, 16\]"):
        segmentation_attack(model, images, masks[:, :16, :16], "pgd", EPS)
    bad = masks.clone()
    bad[0, 10, 10] = 40
    with pytest.raises(UserError, match=r"labels outside 0..10"):
        segmentation_attack(model, images, bad, "pgd", EPS)
    with pytest.raises(UserError, match="did you mean 8/255"):
        segmentation_attack(model, images, masks, "pgd", 8.0)
