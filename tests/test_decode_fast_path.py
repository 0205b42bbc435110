"""RGB JPEGs decode through torchvision (libjpeg-turbo), not the PIL fallback, and equal PIL's pixels."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from robustbench_rpc.data import decode


def test_rgb_jpeg_takes_the_torchvision_path(monkeypatch):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    fallbacks = []
    monkeypatch.setattr(decode, "_decode_pil", lambda raw: fallbacks.append(raw))
    decoded = decode.decode_image_bytes(data)
    assert fallbacks == []
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()
    assert torch.equal(decoded.image, torch.from_numpy(expected).permute(2, 0, 1))
