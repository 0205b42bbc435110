"""Models that take pixels in [0, 1]: the wrapper, and :func:`load_model`, the one way to get a model."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_rpc.errors import UserError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_normalization(mean: Sequence[float], std: Sequence[float], channels: int | None = None) -> None:
    """Raise ``UserError`` unless mean and std are finite, std > 0, and both give one value or one per channel."""
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if not mean or not std:
        raise UserError("The normalization needs a mean and a std (e.g. --mean 0.485,0.456,0.406).")
    if len(mean) != len(std):
        raise UserError(f"The normalization has {len(mean)} mean value(s) but {len(std)} std value(s); give "
                        "one per channel for both.")
    if channels is not None and len(mean) not in (1, channels):
        raise UserError(f"The normalization has {len(mean)} values per statistic but the model takes {channels} "
                        f"channels; give 1 or {channels} values.")
    bad_mean = [m for m in mean if not math.isfinite(m)]
    if bad_mean:
        raise UserError(f"The normalization mean must be finite numbers, got {mean}.")
    bad_std = [s for s in std if not math.isfinite(s) or s <= 0]
    if bad_std:
        raise UserError(f"The normalization std must be finite numbers > 0 (the model divides by it), got {std}.")


class NormalizedModel(nn.Module):
    """Wrap a model that takes normalized inputs so that it takes pixels in [0, 1] (the RobustBench convention)."""

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        preprocessing: dict[str, Any] | None = None,
        info: ModelInfo | None = None,
    ) -> None:
        super().__init__()
        check_normalization(mean, std)
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.preprocessing = dict(preprocessing or {})
        self.preprocessing.setdefault("mean", tuple(float(m) for m in mean))
        self.preprocessing.setdefault("std", tuple(float(s) for s in std))
        self.info = info

    def normalize(self, x: Tensor) -> Tensor:
        """Map pixels in [0, 1] to the inner model's normalized input."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


@dataclass
class ModelInfo:
    """What :func:`load_model` built: the name, options, checkpoint and architecture summary."""

    name: str
    family: str
    attention: str
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_layout: str | None = None
    use_ema: bool = False
    num_params: int = 0
    rpc: str = "off"
    recipe: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description (for provenance)."""
        from dataclasses import asdict

        return asdict(self)


PREPROCESSING_KEYS = ("input_size", "crop_pct", "interpolation", "mean", "std")


def _pretrained_preprocessing(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if not isinstance(cfg, dict):
        cfg = dict(cfg)
    return {
        "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
    }


def _import_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"Cannot import module {module_name!r} for model factory {spec!r} ({exc}).") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UserError(f"Module {module_name!r} has no callable {attr!r} (model factory {spec!r}).")
    return factory


def _head_classes(state_dict: dict[str, Tensor], model: nn.Module | None = None) -> int | None:
    names = ["head.weight", "head.fc.weight", "fc.weight", "classifier.weight"]
    if model is not None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        clf = cfg.get("classifier") if isinstance(cfg, dict) else None
        if isinstance(clf, str):
            names.insert(0, clf + ".weight")
    for name in names:
        if name in state_dict and state_dict[name].ndim == 2:
            return int(state_dict[name].shape[0])
    return None


def _fit_input_size(model: nn.Module, name: str, prep: dict[str, Any], user_size: bool) -> None:
    """Make the input size fit a fixed-size model (a ViT's patch grid), or refuse a user's size that cannot."""
    patch_embed = getattr(model, "patch_embed", None)
    built = getattr(patch_embed, "img_size", None)
    strict = getattr(patch_embed, "strict_img_size", True) and not getattr(patch_embed, "dynamic_img_size", False)
    if built is None or not strict:
        return
    wanted = tuple(int(v) for v in prep["input_size"])[-2:]
    if tuple(built) == wanted:
        return
    if not user_size:  # built for another size (e.g. read off a checkpoint): preprocess for that size
        prep["input_size"] = (3, *(int(v) for v in built))
        return
    hint = getattr(model, "resize_hint", None)  # a model that cannot be rebuilt for another size says why
    fix = hint or (f"build it for that size with --model-arg img_size={wanted[0]} (position embeddings are "
                   "resampled)")
    raise UserError(
        f"{name} was built for {built[0]}x{built[1]} inputs but the preprocessing gives {wanted[0]}x{wanted[1]}; "
        f"{fix}."
    )


def load_model(
    name: str,
    checkpoint: str | None = None,
    *,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    num_classes: int | None = None,
    preprocessing: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    shipped_weights: bool = True,
    **model_kwargs: Any,
) -> NormalizedModel:
    """Build model ``name`` (ours, any timm name, or ``package.module:factory``), load ``checkpoint``, and wrap it.

    The returned model takes pixels in [0, 1]; its ``preprocessing`` (input size, crop_pct, interpolation, mean,
    std) comes from the model's timm config, overridden by ``preprocessing``. ``model_kwargs`` go to the builder
    (for our models e.g. ``rpc_iters``, ``rpc_lambda``, ``rpc_layers``, ``rpc_threshold``, ``embed_dim``...).
    Width, depth, heads, class count and image size are read from the checkpoint where it has them; where the
    weights cannot tell (a SymViT's heads) the checkpoint's recorded recipe decides (:mod:`.recipe`), and a
    disagreement with ``name`` warns (:class:`~robustbench_rpc.models.recipe.CheckpointRecipeWarning`) or refuses.
    A model the package ships weights for (the digits models) loads them when no checkpoint is given and no option
    changes its architecture (``num_classes``, widths...; RPC options do not), unless ``shipped_weights=False``
    (random initialisation, as for training).
    """
    import timm

    from robustbench_rpc.models import checkpoint as ckpt_mod
    from robustbench_rpc.models.recipe import RPC_OPTIONS, CheckpointRecipeWarning, read_recipe, reconcile
    from robustbench_rpc.models.registry import CATALOGUE, FAMILIES, ensure_registered
    from robustbench_rpc.models.shipped import shipped_checkpoint

    ensure_registered()
    same_architecture = num_classes is None and not set(model_kwargs) - set(RPC_OPTIONS)
    if checkpoint is None and shipped_weights and same_architecture and shipped_checkpoint(name) is not None:
        checkpoint = str(shipped_checkpoint(name))
    ckpt = ckpt_mod.read_checkpoint(checkpoint, trust=trust_checkpoint) if checkpoint else None
    recipe = read_recipe(ckpt.meta) if ckpt else None
    state_dict = ckpt.weights(use_ema) if ckpt else None
    entry = CATALOGUE.get(name)
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes

    if ":" in name:
        factory = _import_factory(name)
        try:
            model = factory(**kwargs)
        except TypeError as exc:
            raise UserError(f"Model factory {name!r} rejected the options {sorted(kwargs)} ({exc}).") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"Model factory {name!r} returned a {type(model).__name__}, not a torch.nn.Module.")
        family, attention = "custom", "custom"
    elif entry is not None:
        family, attention = entry.family, entry.attention
        fam = FAMILIES[family]
        if state_dict is not None:
            found = ckpt_mod.guess_family(state_dict)
            if found is not None and found not in fam.accepts:
                raise UserError(
                    f"Checkpoint {checkpoint} looks like a {found} checkpoint, but {name} is a {fam.label} model; "
                    f"try --model {ckpt_mod.FAMILY_EXAMPLES[found]}."
                )
            inferred = fam.infer_config(state_dict)
            ckpt_classes = inferred.get("num_classes")
            if num_classes is not None and ckpt_classes is not None and num_classes != ckpt_classes:
                raise UserError(
                    f"Checkpoint {checkpoint} has a {ckpt_classes}-class head but {num_classes} classes were "
                    "asked for (--num-classes); drop the option to follow the checkpoint."
                )
            added, warning = reconcile(recipe, name, family, inferred, kwargs, str(checkpoint))
            if warning is not None:
                import warnings

                warnings.warn(warning, CheckpointRecipeWarning, stacklevel=2)
            kwargs = {**inferred, **added, **kwargs}
        try:
            model = timm.create_model(name, **kwargs)
        except TypeError as exc:
            raise UserError(f"{name} rejected the options {sorted(model_kwargs)} ({exc}).") from None
    else:
        if name not in timm.list_models():
            known = list(CATALOGUE) + [m for m in timm.list_models() if m not in CATALOGUE]
            raise UserError(f"Unknown model {name!r}{did_you_mean(name, known)}; see `robustbench-rpc models list`.")
        if state_dict is not None and num_classes is None:
            found = _head_classes(state_dict)
            if found is not None:
                kwargs["num_classes"] = found
        try:
            model = timm.create_model(name, **kwargs)
        except TypeError as exc:
            raise UserError(f"timm model {name!r} rejected the options {sorted(model_kwargs)} ({exc}).") from None
        family, attention = "timm", "softmax"

    if state_dict is not None:
        if entry is not None and FAMILIES[family].adapt_state_dict is not None:
            state_dict = FAMILIES[family].adapt_state_dict(state_dict, model)
        ckpt_mod.load_weights(model, state_dict, name, str(checkpoint))

    prep = _pretrained_preprocessing(model)
    for key, value in (preprocessing or {}).items():
        if key not in PREPROCESSING_KEYS:
            raise UserError(f"Unknown preprocessing option {key!r}; expected one of {', '.join(PREPROCESSING_KEYS)}.")
        if value is not None:
            prep[key] = value
    _fit_input_size(model, name, prep, user_size=(preprocessing or {}).get("input_size") is not None)
    check_normalization(prep["mean"], prep["std"], int(prep["input_size"][0]) if prep.get("input_size") else None)
    rpc = getattr(model, "rpc_description", lambda: "off")()
    info = ModelInfo(
        name=name,
        family=family,
        attention=attention,
        options={k: v for k, v in model_kwargs.items()},
        checkpoint=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=ckpt.sha256 if ckpt else None,
        checkpoint_layout=ckpt.layout if ckpt else None,
        use_ema=use_ema,
        num_params=sum(p.numel() for p in model.parameters()),
        rpc=rpc,
        recipe=recipe.as_dict() if recipe else None,
    )
    wrapped = NormalizedModel(model, prep["mean"], prep["std"], preprocessing=prep, info=info)
    wrapped.eval()
    if device is not None:
        wrapped.to(device)
    return wrapped
