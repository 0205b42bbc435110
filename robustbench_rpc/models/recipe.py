"""What a checkpoint says about itself: the recorded recipe (model name, heads, RPC options) and its reconciliation
with the model name a user chose.

Width and depth are read off the weights; the head count cannot be (a ``[2D, D]`` ``qkv`` fits any divisor of
``D``), so a checkpoint that records its recipe decides it: DeiT/KPCA training scripts save ``args`` (``args.model``,
sometimes ``args.num_heads``), FAN's saver an ``arch``, and this package's own checkpoints a JSON model config in
their metadata (:data:`METADATA_KEY`). A disagreement between the chosen name and the recorded one (family, size,
heads) gives one :class:`CheckpointRecipeWarning` naming both, or a :class:`UserError` where both cannot hold.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from robustbench_rpc.errors import UserError

#: The metadata key under which this package's checkpoints carry their model config (a JSON object).
METADATA_KEY = "robustbench_rpc_model"
#: Heads of the DeiT / ViT sizes (the official recipes): a name with one of these sizes implies its heads.
VIT_HEADS = {"tiny": 3, "small": 6, "base": 12}
SIZES = ("tiny", "small", "base", "large", "digits")
RPC_OPTIONS = ("rpc_iters", "rpc_lambda", "rpc_layers", "rpc_threshold")


class CheckpointRecipeWarning(UserWarning):
    """The chosen model name and the checkpoint's recorded recipe disagree (the load followed the checkpoint)."""


@dataclass(frozen=True)
class Recipe:
    """A checkpoint's recorded recipe: the model name, the heads and where each came from, RPC options."""

    name: str | None
    source: str
    num_heads: int | None = None
    heads_source: str | None = None
    rpc: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description (``models info CKPT``)."""
        return {"name": self.name, "source": self.source, "num_heads": self.num_heads,
                "heads_source": self.heads_source, "rpc": dict(self.rpc) or None}


def model_metadata(name: str, num_heads: int, rpc: dict[str, Any] | None = None, **extra: Any) -> dict[str, str]:
    """Return the metadata entry this package writes into its checkpoints (safetensors metadata is str -> str)."""
    config = {"name": name, "num_heads": int(num_heads), "rpc": dict(rpc) if rpc else None, **extra}
    return {METADATA_KEY: json.dumps(config, sort_keys=True)}


def name_size(name: str | None) -> str | None:
    """Return the size word of a model name (``tiny``, ``small``, ``base``, ``large``, ``digits``), or None."""
    found = re.search(r"(?:^|_)(" + "|".join(SIZES) + r")(?:_|$)", str(name or ""))
    return found.group(1) if found else None


def name_family(name: str | None) -> str | None:
    """Return ``fan``, ``fan_hybrid`` or ``vit`` (DeiT, ViT, SymViT) for a model name, or None when unknown."""
    text = str(name or "").lower()
    if "fan" in text:
        return "fan_hybrid" if "hybrid" in text else "fan"
    if "vit" in text or "deit" in text:
        return "vit"
    return None


def _implied_heads(name: str | None) -> int | None:
    size = name_size(name)
    return VIT_HEADS.get(size) if size and name_family(name) == "vit" else None


def read_recipe(meta: dict[str, Any]) -> Recipe | None:
    """Return the recipe that a checkpoint's metadata records (ours first, then ``args``, then ``arch``), or None."""
    ours = meta.get(METADATA_KEY)
    if isinstance(ours, str):
        try:
            ours = json.loads(ours)
        except ValueError:
            ours = None
    if isinstance(ours, dict) and ours.get("name"):
        heads = ours.get("num_heads")
        return Recipe(str(ours["name"]), f"{METADATA_KEY} metadata", int(heads) if heads else None,
                      f"{METADATA_KEY} metadata" if heads else None, dict(ours.get("rpc") or {}))
    args = meta.get("args") if isinstance(meta.get("args"), dict) else {}
    name = args.get("model") if isinstance(args.get("model"), str) else None
    source = "args.model"
    if name is None and isinstance(meta.get("arch"), str):
        name, source = meta["arch"], "arch"
    heads = args.get("num_heads")
    if isinstance(heads, int) and heads > 0:
        return Recipe(name, source if name else "args", heads, "args.num_heads")
    if name is None:
        return None
    implied = _implied_heads(name)
    return Recipe(name, source, implied, f"{source} ({name_size(name)})" if implied else None)


def _family_of_entry(family: str) -> str:
    if "fan" in family:
        return "fan_hybrid" if "hybrid" in family else "fan"
    return "vit"


def reconcile(
    recipe: Recipe | None,
    chosen: str,
    entry_family: str,
    inferred: dict[str, Any],
    user_kwargs: dict[str, Any],
    source: str,
) -> tuple[dict[str, Any], str | None]:
    """Return (builder kwargs the recipe adds, the one warning sentence or None) for loading ``source`` as ``chosen``.

    The recorded heads are used where the weights do not give them (``inferred`` has no ``num_heads``) and the user
    did not ask for others; recorded RPC options fill in those the user did not give to an ``rpc_`` name (plain and
    RPC attention share checkpoints, so loading one under the other is no disagreement). Heads that do not divide the
    width read off the weights are refused.
    """
    if recipe is None:
        return {}, None
    add: dict[str, Any] = {}
    differs: list[str] = []
    done: list[str] = []
    recorded = recipe.name or "(no name)"
    fam, own_fam = name_family(recipe.name), _family_of_entry(entry_family)
    if fam is not None and fam != own_fam:
        differs.append(f"family {fam} vs {own_fam}")
    size, own_size = name_size(recipe.name), name_size(chosen)
    if size is not None and own_size is not None and size != own_size:
        differs.append(f"size {size} vs {own_size}")
    heads = recipe.num_heads
    implied_only = recipe.heads_source is not None and not recipe.heads_source.startswith(("args.num_heads",
                                                                                            METADATA_KEY))
    if implied_only and entry_family == "kpca":
        heads = None  # the official Reconstruction code's deit_tiny has 6 heads, not DeiT's 3: the builder knows
    if heads is not None and "num_heads" not in inferred:
        width = inferred.get("embed_dim")
        asked = user_kwargs.get("num_heads")
        if asked is not None and int(asked) != heads:
            differs.append(f"{heads} heads recorded ({recipe.heads_source}) vs num_heads={asked} asked for")
            done.append(f"num_heads={asked} as asked")
        elif asked is None:
            if width is not None and int(width) % heads != 0:
                raise UserError(
                    f"Checkpoint {source} records {heads} heads ({recipe.heads_source}: {recorded}) but its weights "
                    f"are {width} wide, which {heads} heads cannot split; it cannot be loaded as {chosen}."
                )
            add["num_heads"] = heads
            own_heads = VIT_HEADS.get(own_size or "")
            if own_heads is not None and own_heads != heads:
                differs.append(f"{heads} heads vs {own_heads}")
                done.append(f"{heads} heads as recorded (width {width} and depth from the weights)")
    if recipe.rpc and chosen.startswith("rpc_"):  # plain and RPC attention share checkpoints: no disagreement
        add.update({k: v for k, v in recipe.rpc.items() if k in RPC_OPTIONS and v is not None and k not in user_kwargs})
    if not differs:
        return add, None
    action = "; loaded with " + ", ".join(done) if done else "; loaded as the weights allow"
    return add, (f"Checkpoint {source} records model {recorded} ({recipe.source}) but is loaded as {chosen}: "
                 f"{', '.join(differs)}{action}.")


def describe_checkpoint(path: str, trust: bool = False) -> dict[str, Any]:
    """Return what a checkpoint file says about itself: layout, SHA-256, the family and config its weights show,
    the recorded recipe and training metadata, and the model name to load it with."""
    from robustbench_rpc.models.checkpoint import FAMILY_EXAMPLES, guess_family, read_checkpoint
    from robustbench_rpc.models.registry import CATALOGUE, FAMILIES, ensure_registered

    ensure_registered()
    ckpt = read_checkpoint(path, trust=trust)
    family = guess_family(ckpt.state_dict)
    config: dict[str, Any] = {}
    for fam in FAMILIES.values():
        if family in fam.accepts:
            config = {k: v for k, v in fam.infer_config(ckpt.state_dict).items() if isinstance(v, (int, float, str))}
            break
    recipe = read_recipe(ckpt.meta)
    suggested = None
    if recipe is not None and recipe.name in CATALOGUE:
        suggested = recipe.name
    elif recipe is not None and family == "symvit" and name_size(recipe.name) in VIT_HEADS:
        suggested = f"symvit_{name_size(recipe.name)}_patch16_224 (or rpc_symvit_{name_size(recipe.name)}_patch16_224)"
    elif family is not None:
        suggested = FAMILY_EXAMPLES[family]
    training = {k: v for k, v in ckpt.meta.items() if k in ("epoch", "arch", "version", "metric")}
    args = ckpt.meta.get("args") if isinstance(ckpt.meta.get("args"), dict) else {}
    training.update({f"args.{k}": args[k] for k in ("model", "num_heads", "input_size", "nb_classes", "epochs")
                     if k in args and isinstance(args[k], (int, float, str))})
    return {
        "checkpoint": str(ckpt.path),
        "checkpoint_sha256": ckpt.sha256,
        "checkpoint_layout": ckpt.layout,
        "ema_weights": ckpt.ema_state_dict is not None,
        "tensors": len(ckpt.state_dict),
        "weights_family": family,
        "weights_config": config,
        "recipe": recipe.as_dict() if recipe else None,
        "training_metadata": training,
        "load_as": suggested,
    }
