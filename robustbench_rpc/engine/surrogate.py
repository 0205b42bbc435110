"""The surrogate of a transfer attack: parsed from ``--surrogate``, loaded, checked against the target, identified.

``--surrogate`` is ``NAME_OR_FACTORY[:CHECKPOINT]`` (the part after the last ``:`` is a checkpoint when it names an
existing file or ends like one), or a ready ``nn.Module``. Without one, an RPC target's surrogate is the same
weights with PAP switched off (:func:`robustbench_rpc.models.adaptive.without_pap`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_rpc.errors import UserError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".safetensors", ".ckpt")


def parse_surrogate(text: str) -> tuple[str, str | None]:
    """Split ``NAME_OR_FACTORY[:CHECKPOINT]`` into the model and its checkpoint (None when there is none)."""
    text = str(text).strip()
    if not text:
        raise UserError("--surrogate is empty; expected NAME_OR_FACTORY[:CHECKPOINT].")
    head, sep, tail = text.rpartition(":")
    if sep and head and (Path(tail).expanduser().is_file() or tail.lower().endswith(CHECKPOINT_SUFFIXES)):
        if not Path(tail).expanduser().is_file():
            raise UserError(f"The surrogate's checkpoint {tail} does not exist.")
        return head, tail
    return text, None


def _outputs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    from robustbench_rpc.attacks.base import model_device

    with torch.no_grad():
        return int(model(torch.zeros(1, *input_size, device=model_device(model))).shape[1])


def load_surrogate(
    spec: str | nn.Module | None,
    target: nn.Module,
    device: torch.device,
    *,
    trust_checkpoint: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Return (surrogate on ``device`` in eval mode, its identity for the cell parameters).

    A surrogate that cannot be loaded, or whose class count differs from the target's, is a UserError.
    """
    from robustbench_rpc.models.adaptive import without_pap
    from robustbench_rpc.models.checkpoint import weights_fingerprint
    from robustbench_rpc.models.wrapper import load_model

    if spec is None:
        surrogate = without_pap(target)
        if surrogate is None:
            raise UserError("The transfer attack's default surrogate is the target with PAP switched off, but this "
                            "model has no PAP (RPC attention) layers; pass --surrogate NAME[:CHECKPOINT].")
        identity: dict[str, Any] = {"model": "target without PAP"}
    elif isinstance(spec, nn.Module):
        surrogate = spec
        identity = {"model": type(spec).__name__, "weights_sha256": weights_fingerprint(spec)}
    else:
        name, checkpoint = parse_surrogate(spec)
        try:
            surrogate = load_model(name, checkpoint, trust_checkpoint=trust_checkpoint)
        except UserError as exc:
            raise UserError(f"The surrogate {spec!r} could not be loaded: {exc}") from None
        info = surrogate.info.as_dict() if getattr(surrogate, "info", None) else {}
        identity = {"model": name, "checkpoint_sha256": info.get("checkpoint_sha256")}
        if identity["checkpoint_sha256"] is None:
            identity["weights_sha256"] = weights_fingerprint(surrogate)
    surrogate = surrogate.to(device).eval()
    input_size = tuple(getattr(target, "preprocessing", {}).get("input_size", (3, 224, 224)))
    theirs, ours = _outputs(surrogate, input_size), _outputs(target, input_size)
    if theirs != ours:
        raise UserError(f"The surrogate {identity['model']} has {theirs} outputs but the model has {ours} classes; "
                        "a transfer attack needs a surrogate with the same classes.")
    return surrogate, identity
