"""Model families: SymViT / RPC-SymViT, Scaled Attention / KPCA ViTs, FAN / RPC-FAN; importing registers them."""

from __future__ import annotations

import importlib.util

from robustbench_rpc.models import (
    kernel_vit,  # noqa: F401  (Scaled Attention and KPCA ViTs)
    symvit,  # noqa: F401  (registers the SymViT family)
)

if importlib.util.find_spec("robustbench_rpc.models.fan") is not None:  # FAN family (being written)
    from robustbench_rpc.models import fan  # noqa: F401
