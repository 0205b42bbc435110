"""Tiny seeded models and data shared by the attack tests (helpers, plus a check that they are seeded)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class Centre(nn.Module):
    """Map pixels in [0, 1] to [-2, 2] so that a random conv net's predictions vary across images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 4


def tiny_convnet(n_classes: int = 10, seed: int = 0) -> nn.Module:
    """A small conv net on 3x8x8 images (seeded, eval mode)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        Centre(),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, n_classes),
    )
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run the attack tests on one thread (tiny models are slower with several threads on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_linear(n_classes: int = 10, seed: int = 0) -> nn.Module:
    """A linear classifier on 3x8x8 images whose predictions flip easily."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, n_classes)).eval()


def tiny_batch(
    n: int = 8, seed: int = 1, model: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixels in [0, 1] and labels (the model's clean predictions when a model is given)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=generator)
    if model is None:
        labels = torch.randint(0, 10, (n,), generator=generator)
    else:
        with torch.no_grad():
            labels = model(images).argmax(1)
    return images, labels


def test_tiny_models_are_seeded():
    images, _ = tiny_batch(2)
    assert torch.equal(tiny_convnet()(images), tiny_convnet()(images))
    assert not torch.equal(tiny_convnet(seed=0)(images), tiny_convnet(seed=1)(images))
