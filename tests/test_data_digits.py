"""The embedded digits dataset: a fixed, stratified split of real handwritten digits as pixels in [0, 1]."""

from __future__ import annotations

import torch

from robustbench_rpc.data.digits import load_digits_split


def test_digits_split_is_fixed_and_real():
    train, test = load_digits_split("train"), load_digits_split("test")
    assert (len(train), len(test)) == (1347, 450)
    assert set(train.indices).isdisjoint(test.indices)
    assert test.images.shape == (450, 3, 32, 32) and test.images.dtype == torch.float32
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    whole = torch.bincount(torch.cat([train.labels, test.labels]))
    assert (torch.bincount(test.labels) - whole.float() * 0.25).abs().max() <= 1  # stratified
    assert load_digits_split("test").fingerprint() == test.fingerprint()
