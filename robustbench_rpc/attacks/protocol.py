"""The paper's attack protocol as presets, and the compatibility mode that reproduces how the official code attacked.

Preset ``paper`` (``--protocol paper``): the seven attacks of the paper's table as the official evaluation ran
them, in threat model ``paper`` (normalized space, clean predictions as labels, no clamping; SPSA, SLD, noise and CW
computed step for step as CleverHans did, defects included, see :mod:`robustbench_rpc.attacks.official`):
PGD-20 (step 0.15 eps, random start), FGSM, SPSA-10, CW-L2 (confidence = eps) and AutoAttack at 1/255 ... 6/255,
SLD at L1 10 and uniform noise at 0.3 (normalized units; these two ignore the budgets).

Preset ``paper-pixel``: our default, correct versions in pixel space (clamped to [0, 1], true labels) at the same
budgets: PGD, FGSM, SPSA and AutoAttack at 1/255 ... 6/255, SLD at L1 10 x 0.226 and noise at 0.3 x 0.226 (the
official normalized budgets times ImageNet's mean std, i.e. in pixels); CW is left out (the official CW has no
budget; run ``--attack cw --eps ...`` for a budgeted one).

Compatibility mode (never the default). The official code (CleverHans attacks called in its ``engine.py``) attacked
the *normalized* input tensor, without any clamping, against the model's own clean predictions (no labels were
passed, so CleverHans used ``argmax model(x)``). ``run_attack(..., compat=...)`` reproduces that for a
:class:`~robustbench_rpc.models.wrapper.NormalizedModel`:

* ``compat="normalized"`` (or ``True``): eps is applied as a scalar to the normalized tensor, as the official code
  did; in pixel units that is a per-channel budget of ``eps * std_c``.
* ``compat="pixel"``: the normalized-space budget is ``eps / std_c`` per channel, i.e. exactly ``eps`` in pixel units,
  still without clamping and against clean predictions.
* ``compat="paper"``: ``normalized`` for PGD, FGSM, AutoAttack and the others; the official computations for
  SPSA, SLD, noise and CW.

In all of them, the attack labels are the clean predictions, the perturbed images are not clamped to [0, 1] and the
budget is verified in the space the attack ran in (CW in ``paper`` has none). Implementation: the attack runs
unchanged on the affine reparametrisation ``z = (u - lo) / s`` of that space ``u`` (normalized tensor or pixels),
with ``[lo, lo + s]`` wide enough (the data range plus eps plus 1 on each side) that the attacks' [0, 1] clamps
never bind; eps and the options marked ``absolute`` are divided by ``s``. Every attack here is equivariant to such a
map except CW (its tanh box), which refuses ``normalized`` and ``pixel``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from robustbench_rpc.attacks.budgets import parse_eps
from robustbench_rpc.attacks.registry import AttackSpec, build_attack_spec, threat_model_name
from robustbench_rpc.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from torch import Tensor, nn

#: The paper's budgets: 1/255 ... 6/255.
PAPER_EPS: tuple[float, ...] = tuple(parse_eps("1/255:6/255"))
#: ImageNet's mean std, converting the official normalized SLD / noise budgets to pixels for ``paper-pixel``.
IMAGENET_MEAN_STD = 0.226


def _budget_sweeps(cw: bool) -> list[AttackSpec]:
    """PGD, FGSM, SPSA, (CW) and AutoAttack at the paper's budgets, attack-major."""
    specs = [build_attack_spec("pgd", "Linf", e, steps=20, rel_stepsize=0.15, random_start=True) for e in PAPER_EPS]
    specs += [build_attack_spec("fgsm", "Linf", e) for e in PAPER_EPS]
    specs += [build_attack_spec("spsa", "Linf", e, steps=10, samples=128, delta=0.01, lr=0.01) for e in PAPER_EPS]
    if cw:  # CleverHans' defaults, as the official call: lr 5e-3, initial constant 1e-2, 1000 iterations
        specs += [build_attack_spec("cw", "L2", e, c=0.01, steps=1000, lr=0.005) for e in PAPER_EPS]
    specs += [build_attack_spec("autoattack", "Linf", e, version="standard") for e in PAPER_EPS]
    return specs


def _paper_specs() -> list[AttackSpec]:
    """The official evaluation's seven attacks (threat model ``paper``)."""
    return [*_budget_sweeps(cw=True), build_attack_spec("sld", "L1", 10.0, abs_stepsize=1.0, steps=20, sparsity=99.0),
            build_attack_spec("noise", "Linf", 0.3)]


def _paper_pixel_specs() -> list[AttackSpec]:
    """Our default pixel-space versions at the paper's budgets (SLD and noise budgets converted to pixels)."""
    s = IMAGENET_MEAN_STD
    return [*_budget_sweeps(cw=False),
            build_attack_spec("sld", "L1", 10.0 * s, abs_stepsize=1.0 * s, steps=20, sparsity=99.0),
            build_attack_spec("noise", "Linf", 0.3 * s)]


#: Named presets: protocol name -> the list of attack specs it runs.
PROTOCOLS: dict[str, list[AttackSpec]] = {"paper": _paper_specs(), "paper-pixel": _paper_pixel_specs()}
#: The threat model each preset runs in (a ``compat`` value).
PROTOCOL_THREAT_MODELS: dict[str, bool | str] = {"paper": "paper", "paper-pixel": False}


def protocol_specs(name: str) -> list[AttackSpec]:
    """Return the specs of preset ``name`` or raise a UserError listing the presets."""
    return list(PROTOCOLS[_protocol_key(name)])


def _protocol_key(name: str) -> str:
    key = str(name).strip().lower()
    if key not in PROTOCOLS:
        raise UserError(
            f"Unknown protocol {name!r}{did_you_mean(key, PROTOCOLS)}; known: {', '.join(PROTOCOLS)}."
        )
    return key


def protocol_threat_model(name: str, compat: bool | str | None) -> bool | str:
    """Return the ``compat`` value a run of preset ``name`` uses; an explicit, different ``compat`` is refused."""
    key = _protocol_key(name)
    own = PROTOCOL_THREAT_MODELS[key]
    if compat in (None, False) or threat_model_name(compat) == threat_model_name(own):
        return own
    raise UserError(f"--protocol {key} runs in threat model {threat_model_name(own)}; drop --compat "
                    f"{compat} (or use --attack and --eps to run another threat model).")


def compat_mode(compat: bool | str | None) -> str | None:
    """Return None (default threat model), 'normalized', 'pixel' or 'paper' for a ``compat`` argument."""
    name = threat_model_name(compat)
    return None if name == "pixel" else name.removeprefix("compat-")


@dataclass
class CompatSpace:
    """The attack's view in compat mode: model on ``z in [0, 1]``, clean ``z``, and the map back to ``u``."""

    mode: str
    model: nn.Module  # takes z
    inner: nn.Module  # takes u (normalized tensor or pixels)
    u_clean: Tensor
    z_clean: Tensor
    lo: float
    scale: float

    def u_from_z(self, z_adv: Tensor) -> Tensor:
        """Map adversarial ``z`` back to ``u``; unchanged coordinates map back exactly to ``u_clean``."""
        return self.u_clean + (z_adv - self.z_clean) * self.scale

    def pixels_from_u(self, u: Tensor, wrapper: nn.Module) -> Tensor:
        """Return pixel values (not clamped) of ``u``."""
        if self.mode == "normalized":
            return u * wrapper.std.to(u.dtype) + wrapper.mean.to(u.dtype)
        return u

    def rescale(self, spec: AttackSpec) -> AttackSpec:
        """Return ``spec`` with eps and its absolute options expressed in z units."""
        definition = spec.definition
        params = dict(spec.params)
        for option in definition.options:
            if option.absolute and params.get(option.name) is not None:
                params[option.name] = float(params[option.name]) / self.scale
        return replace(spec, eps=spec.eps / self.scale, params=params)


def _affine_model(inner: nn.Module, lo: float, scale: float) -> nn.Module:
    """Return a module computing ``inner(z * scale + lo)``."""
    from torch import nn

    class AffineInput(nn.Module):
        """``inner`` evaluated on ``z * scale + lo``: the compat-mode attack space."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: Tensor) -> Tensor:
            return self.inner(z * scale + lo)

    return AffineInput()


def build_compat_space(model: nn.Module, images: Tensor, spec: AttackSpec, mode: str) -> CompatSpace:
    """Set up compat mode ``mode`` ('normalized' or 'pixel') for a NormalizedModel and a batch of pixels."""
    check_normalized_model(model)
    if not spec.definition.supports_compat:
        raise UserError(f"Attack {spec.name!r} does not support the compatibility mode.")
    if mode == "normalized":
        inner, u_clean = model.model, model.normalize(images).detach()
    else:
        inner, u_clean = model, images.detach()
    margin = float(spec.eps) + 1.0
    lo = float(u_clean.min()) - margin
    scale = float(u_clean.max()) + margin - lo
    z_clean = ((u_clean - lo) / scale).detach()
    return CompatSpace(mode, _affine_model(inner, lo, scale), inner, u_clean, z_clean, lo, scale)


def check_normalized_model(model: nn.Module) -> None:
    """Raise a UserError unless ``model`` is a NormalizedModel (it has .model, .normalize and .std)."""
    if not (hasattr(model, "model") and hasattr(model, "normalize") and hasattr(model, "std")):
        raise UserError(
            "The compatibility mode needs a NormalizedModel (a model with .model, .mean and .std) "
            f"to attack in normalized space; got {type(model).__name__}."
        )
