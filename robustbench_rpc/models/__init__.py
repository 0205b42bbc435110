"""Model families: SymViT / RPC-SymViT, FAN / symmetric FAN / RPC-FAN; importing registers them in timm."""

from __future__ import annotations

import importlib.util

from robustbench_rpc.models import symvit  # noqa: F401  (registers the SymViT family)

if importlib.util.find_spec("robustbench_rpc.models.fan") is not None:  # FAN family (being written)
    from robustbench_rpc.models import fan  # noqa: F401
