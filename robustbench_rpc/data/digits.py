"""The ``digits`` dataset: scikit-learn's 1,797 real 8x8 handwritten digits as 32x32 RGB pixels in [0, 1]."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Seed of the fixed train / test split (stratified, 25% test).
SPLIT_SEED = 0
TEST_FRACTION = 0.25
IMAGE_SIZE = 32
CLASS_NAMES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    """One split of the digits: images ``[N, 3, 32, 32]`` float32 in [0, 1], labels ``[N]``, source indices."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def sample_ids(self) -> list[str]:
        """Return stable ids: the position of each image in scikit-learn's digits array."""
        return [f"digits/{i:04d}" for i in self.indices]

    def fingerprint(self) -> dict[str, object]:
        """Return a provenance fingerprint of the split (name, size, hash of the pixels and labels)."""
        digest = hashlib.sha256(self.images.numpy().tobytes() + self.labels.numpy().tobytes()).hexdigest()
        return {"dataset": "digits", "split": self.name, "num_samples": len(self), "sha256": digest[:16],
                "source": "sklearn.datasets.load_digits (UCI ML hand-written digits, 8x8 upsampled to 32x32)"}


def upsample_digits(raw: np.ndarray) -> torch.Tensor:
    """Turn ``[N, 8, 8]`` digits with values 0..16 into ``[N, 3, 32, 32]`` float32 pixels in [0, 1] (bilinear)."""
    x = torch.from_numpy(np.asarray(raw, dtype=np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


def split_indices(split: str, target: np.ndarray) -> np.ndarray:
    """Return the sorted positions of the ``train`` or ``test`` split among the digits whose labels are ``target``."""
    from sklearn.model_selection import train_test_split

    from robustbench_rpc.errors import UserError

    if split not in ("train", "test"):
        raise UserError(f"The digits dataset has splits 'train' and 'test', not {split!r}.")
    order = np.arange(len(target))
    train_idx, test_idx = train_test_split(order, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=target)
    return np.sort(train_idx if split == "train" else test_idx)


def load_digits_split(split: str = "test") -> DigitsSplit:
    """Load the ``train`` or ``test`` split (fixed, seeded, stratified)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    idx = split_indices(split, data.target)
    images = upsample_digits(data.images[idx])
    labels = torch.from_numpy(data.target[idx].astype(np.int64))
    return DigitsSplit(images, labels, idx, split)
