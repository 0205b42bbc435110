"""The attack registry: one name per attack, its norms, its options with documented defaults, and how to build it.

This module is torch-free (the CLI lists attacks and validates options without importing torch); each definition
names its factory as ``"module:function"`` and imports it only when an attack is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from robustbench_rpc.attacks.budgets import (
    NORMS,
    format_eps,
    normalize_norm,
    parse_eps_value,
    parse_number,
    validate_eps,
)
from robustbench_rpc.errors import UserError, did_you_mean

_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Option:
    """One attack parameter: its default, meaning, type and limits.

    ``absolute`` marks a length in input units (an absolute step size, a finite-difference size, a learning rate
    on the perturbation): the compatibility mode rescales those together with eps.
    """

    name: str
    default: Any
    doc: str
    kind: str = "float"
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    nullable: bool = False
    absolute: bool = False

    def coerce(self, value: Any, attack: str) -> Any:
        """Return ``value`` converted to this option's type (strings from the command line are parsed)."""
        where = f"option {self.name!r} of attack {attack!r}"
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if self.nullable:
                return None
            raise UserError(f"The {where} cannot be empty; expected a {self.kind}.")
        try:
            if self.kind == "bool":
                value = _to_bool(value)
            elif self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = int(value)
            elif self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                value = parse_number(value) if isinstance(value, str) else float(value)
            else:
                value = str(value)
        except (TypeError, ValueError, UserError):
            raise UserError(f"The {where} must be a {self.kind}, got {value!r}.") from None
        if self.choices is not None and value not in self.choices:
            raise UserError(f"The {where} must be one of {', '.join(map(str, self.choices))}, got {value!r}.")
        if self.minimum is not None and value < self.minimum:
            raise UserError(f"The {where} must be >= {self.minimum:g}, got {value!r}.")
        return value


def _to_bool(value: Any) -> bool:
    """Read a boolean from a bool or a string such as 'true', 'no', '1'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(value)


@dataclass(frozen=True)
class AttackDefinition:
    """What the registry knows about one attack: norms, options, black-box / stochastic flags and its factory."""

    name: str
    norms: tuple[str, ...]
    options: tuple[Option, ...]
    description: str
    factory: str  # "module:function", imported lazily
    black_box: bool = False
    stochastic: bool = False
    supports_compat: bool = True
    source: str = ""
    transfer: bool = False  # crafted on a surrogate model, scored on the target

    @property
    def white_box(self) -> bool:
        """True for attacks that follow the target's own gradients (they are traced and take the modifiers)."""
        return not (self.black_box or self.transfer)

    @property
    def defaults(self) -> dict[str, Any]:
        """Return ``{option name: default}``."""
        return {o.name: o.default for o in self.options}

    def option(self, name: str) -> Option:
        """Return the option called ``name`` or raise a UserError naming the valid ones."""
        for o in self.options:
            if o.name == name:
                return o
        valid = ", ".join(o.name for o in self.options) or "none"
        raise UserError(
            f"Attack {self.name!r} has no option {name!r}{did_you_mean(name, [o.name for o in self.options])}; "
            f"its options are: {valid}."
        )

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory function."""
        module, _, func = self.factory.partition(":")
        return getattr(importlib.import_module(module), func)


_STEPS = "number of gradient steps"
#: EOT draws used when ``eot_iter=0`` and repeated forward passes disagree.
AUTO_EOT_ITER = 16

#: Options every attack takes: the precision the attack computes in (the cell is scored in the model's own).
COMMON_OPTIONS = (
    Option("attack_dtype", "float32", "precision of the attack's forward and backward passes (float64: PAP is "
           "ill-conditioned in float32); the adversarial images are scored in float32", "str",
           choices=("float32", "float64")),
)
#: Options every white-box (gradient) attack takes: adaptive-attack modifiers, see robustbench_rpc.attacks.adaptive.
WHITE_BOX_OPTIONS = (
    Option("bpda", False, "BPDA for PAP: the forward runs PAP, the backward differentiates plain symmetric "
           "attention on the same keys and values", "bool"),
    Option("straight_through", None, "comma list of submodules (as in named_modules) whose backward is the "
           "identity: for non-differentiable input transforms", "str", nullable=True),
    Option("eot_iter", 0, "expectation over transformation: forward passes averaged per gradient (0: automatic, "
           f"1 for a model whose predictions repeat, {AUTO_EOT_ITER} otherwise)", "int", minimum=0),
    Option("best_iterate", True, "return the best in-budget point the attack evaluated when its own output is "
           "not adversarial (no silent success)", "bool"),
)
#: The options APGD-CE and APGD-DLR share (their EOT is the white-box ``eot_iter``, passed to APGD natively).
_APGD_OPTIONS = (
    Option("steps", 100, _STEPS, "int", minimum=1),
    Option("restarts", 1, "random restarts", "int", minimum=1),
    Option("rho", 0.75, "step-size decrease threshold", minimum=0),
)
_A = "robustbench_rpc.attacks"

_ATTACK_LIST: tuple[AttackDefinition, ...] = (
    AttackDefinition(
        name="pgd",
        norms=("Linf", "L2"),
        description="Projected gradient descent on the cross-entropy (Madry et al. 2018); torchattacks PGD / PGDL2.",
        factory=f"{_A}.torchattacks_adapter:make_pgd",
        stochastic=True,
        source="torchattacks",
        options=(
            Option("steps", 20, _STEPS, "int", minimum=0),
            Option("rel_stepsize", 0.15, "step size as a multiple of eps (0.15 is the paper's)", minimum=0),
            Option(
                "abs_stepsize",
                None,
                "absolute step size in pixel units; overrides rel_stepsize",
                nullable=True,
                minimum=0,
                absolute=True,
            ),
            Option("random_start", True, "start from a uniformly random point of the eps-ball", "bool"),
            Option("restarts", 1, "PGD runs from fresh random starts; a sample is robust only if every run fails",
                   "int", minimum=1),
        ),
    ),
    AttackDefinition(
        name="fgsm",
        norms=("Linf",),
        description="Fast gradient sign method, one step of eps (Goodfellow et al. 2015); torchattacks FGSM.",
        factory=f"{_A}.torchattacks_adapter:make_fgsm",
        source="torchattacks",
        options=(),
    ),
    AttackDefinition(
        name="spsa",
        norms=("Linf",),
        description="SPSA gradient estimates fed to Adam, projected on the Linf ball (Uesato et al. 2018); "
        "torchattacks SPSA.",
        factory=f"{_A}.torchattacks_adapter:make_spsa",
        black_box=True,
        stochastic=True,
        source="torchattacks",
        options=(
            Option("steps", 10, "number of Adam iterations", "int", minimum=1),
            Option("samples", 128, "SPSA samples (pairs of queries) per gradient estimate", "int", minimum=1),
            Option("delta", 0.01, "finite-difference size in pixel units", minimum=0, absolute=True),
            Option("lr", 0.01, "Adam learning rate on the perturbation", minimum=0, absolute=True),
            Option("max_batch_size", 64, "SPSA samples evaluated at once per image", "int", minimum=1),
        ),
    ),
    AttackDefinition(
        name="sld",
        norms=("L1",),
        description="Sparse L1 descent (Tramer & Boneh 2019): steps along the signs of the top-q% gradient "
        "coordinates, projected on the L1 ball within [0, 1]; written here.",
        factory=f"{_A}.sld:make_sld",
        source="robustbench_rpc",
        options=(
            Option("steps", 20, _STEPS, "int", minimum=0),
            Option("rel_stepsize", 0.1, "L1 length of each step as a multiple of eps", minimum=0),
            Option(
                "abs_stepsize",
                None,
                "absolute L1 step length; overrides rel_stepsize",
                nullable=True,
                minimum=0,
                absolute=True,
            ),
            Option(
                "sparsity",
                99.0,
                "percentile q: only coordinates with |gradient| >= the q-th percentile move",
                minimum=0,
            ),
            Option(
                "clip_grad",
                False,
                "ignore coordinates that sit on the [0, 1] boundary and would be pushed out",
                "bool",
            ),
        ),
    ),
    AttackDefinition(
        name="cw",
        norms=("L2",),
        description="Carlini-Wagner L2 (2017) without binary search on c, torchattacks CW; the result is then "
        "projected on the L2 ball of radius eps so that the cell has a budget.",
        factory=f"{_A}.torchattacks_adapter:make_cw",
        supports_compat=False,
        source="torchattacks",
        options=(
            Option("c", 1.0, "weight of the classification term", minimum=0),
            Option("kappa", 0.0, "confidence margin", minimum=0),
            Option("steps", 50, "number of Adam steps", "int", minimum=1),
            Option("lr", 0.01, "Adam learning rate in tanh space", minimum=0),
        ),
    ),
    AttackDefinition(
        name="noise",
        norms=("Linf",),
        description="Uniform random noise in [-eps, eps] per pixel (a baseline, no model query); written here.",
        factory=f"{_A}.torchattacks_adapter:make_noise",
        black_box=True,
        stochastic=True,
        source="robustbench_rpc",
        options=(),
    ),
    AttackDefinition(
        name="square",
        norms=("Linf", "L2"),
        description="Square attack, random search with square updates (Andriushchenko et al. 2020); "
        "torchattacks Square.",
        factory=f"{_A}.torchattacks_adapter:make_square",
        black_box=True,
        stochastic=True,
        source="torchattacks",
        options=(
            Option("queries", 5000, "maximum queries per restart", "int", minimum=1),
            Option("restarts", 1, "random restarts", "int", minimum=1),
            Option("p_init", 0.8, "initial fraction of pixels changed by a square", minimum=0),
            Option("loss", "margin", "loss to minimise", "str", choices=("margin", "ce")),
            Option("rescale_schedule", True, "adapt the p schedule to the query budget", "bool"),
        ),
    ),
    AttackDefinition(
        name="apgd-ce",
        norms=("Linf", "L2", "L1"),
        description="Auto-PGD on the cross-entropy (Croce & Hein 2020); pyautoattack APGDAttack.",
        factory=f"{_A}.autoattack_adapter:make_apgd_ce",
        stochastic=True,
        source="pyautoattack",
        options=_APGD_OPTIONS,
    ),
    AttackDefinition(
        name="apgd-dlr",
        norms=("Linf", "L2", "L1"),
        description="Auto-PGD on the DLR loss (Croce & Hein 2020; needs >= 3 classes); pyautoattack APGDAttack.",
        factory=f"{_A}.autoattack_adapter:make_apgd_dlr",
        stochastic=True,
        source="pyautoattack",
        options=_APGD_OPTIONS,
    ),
    AttackDefinition(
        name="autoattack",
        norms=("Linf", "L2", "L1"),
        description="AutoAttack ensemble (Croce & Hein 2020), pyautoattack; 'standard' is APGD-CE, APGD-T, FAB-T "
        "and Square with min(9, classes - 1) target classes (5 for L1).",
        factory=f"{_A}.autoattack_adapter:make_autoattack",
        stochastic=True,
        source="pyautoattack",
        options=(
            Option("version", "standard", "AutoAttack version", "str", choices=("standard", "plus", "rand")),
        ),
    ),
)

_TRANSFER = AttackDefinition(
    name="transfer",
    norms=("Linf", "L2"),
    description="Transfer attack: adversarial examples crafted on a surrogate model (--surrogate; for an RPC model "
    "by default the same weights with PAP switched off), scored on the target; written here.",
    factory=f"{_A}.transfer:make_transfer",
    stochastic=True,
    supports_compat=False,
    source="robustbench_rpc",
    transfer=True,
    options=(
        Option("method", "pgd", "attack run on the surrogate", "str", choices=("pgd", "fgsm", "apgd-ce")),
        Option("steps", 40, _STEPS + " on the surrogate (pgd, apgd-ce)", "int", minimum=1),
        Option("rel_stepsize", 0.15, "pgd step size as a multiple of eps", minimum=0),
        Option("restarts", 1, "random restarts on the surrogate", "int", minimum=1),
    ),
)


def _with_modifiers(definition: AttackDefinition) -> AttackDefinition:
    """Append the options every attack takes, and the white-box modifiers for gradient attacks."""
    extra = COMMON_OPTIONS + (WHITE_BOX_OPTIONS if definition.white_box else ())
    return replace(definition, options=definition.options + extra)


#: Registry: attack name -> definition.
ATTACKS: dict[str, AttackDefinition] = {a.name: _with_modifiers(a) for a in (*_ATTACK_LIST, _TRANSFER)}


def get_attack(name: str) -> AttackDefinition:
    """Return the definition of ``name`` (case-insensitive) or raise a UserError listing the known attacks."""
    key = str(name).strip().lower()
    if key in ATTACKS:
        return ATTACKS[key]
    raise UserError(
        f"Unknown attack {name!r}{did_you_mean(key, ATTACKS)}; known attacks: {', '.join(ATTACKS)}."
    )


@dataclass(frozen=True)
class AttackSpec:
    """One attack condition: attack name, norm, eps (pixel units) and every option value (defaults filled in)."""

    name: str
    norm: str
    eps: float
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def definition(self) -> AttackDefinition:
        """Return the registry entry of this attack."""
        return get_attack(self.name)

    def to_params(self, compat: bool | str = False) -> dict[str, Any]:
        """Return the cell-spec params: name, norm, eps, options and the threat model ('pixel' or compat)."""
        return {
            "name": self.name,
            "norm": self.norm,
            "eps": float(self.eps),
            "options": dict(sorted(self.params.items())),
            "threat_model": threat_model_name(compat),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AttackSpec:
        """Rebuild (and re-validate) a spec from :meth:`to_params` output."""
        return build_attack_spec(
            params["name"], norm=params["norm"], eps=params["eps"], **params.get("options", {})
        )

    def label(self) -> str:
        """Return a short human label such as ``pgd Linf 8/255``."""
        return f"{self.name} {self.norm} {format_eps(self.eps)}"


def threat_model_name(compat: bool | str) -> str:
    """Return 'pixel' (the default threat model), 'compat-normalized' / 'compat-pixel', or 'paper'.

    'paper' is the official evaluation's computation (normalized space, its CleverHans versions of SPSA, SLD,
    noise and CW, defects included): see :mod:`robustbench_rpc.attacks.official`.
    """
    if compat is False or compat is None:
        return "pixel"
    if compat is True or compat == "normalized":
        return "compat-normalized"
    if compat == "pixel":
        return "compat-pixel"
    if compat == "paper":
        return "paper"
    raise UserError(f"Unknown compatibility mode {compat!r}; expected False, True, 'normalized', 'pixel' or "
                    "'paper'.")


def build_attack_spec(
    name: str, norm: str | None = None, eps: float | str = 8 / 255, **options: Any
) -> AttackSpec:
    """Validate an attack request and return its spec with every option resolved.

    Unknown attacks, norms the attack does not support, out-of-range eps and options that do not belong to the
    attack raise :class:`~robustbench_rpc.errors.UserError` with one sentence.
    """
    definition = get_attack(name)
    norm = definition.norms[0] if norm is None else normalize_norm(norm)
    if norm not in definition.norms:
        raise UserError(
            f"Attack {definition.name!r} does not support the {norm} norm; it supports {', '.join(definition.norms)}."
        )
    if isinstance(eps, str):
        eps_value = parse_eps_value(eps, norm=norm)
    else:
        eps_value = validate_eps(eps, norm)
    params = definition.defaults
    for key, value in options.items():
        params[key] = definition.option(key).coerce(value, definition.name)
    return AttackSpec(name=definition.name, norm=norm, eps=eps_value, params=params)


def parse_options(items: Iterable[str]) -> dict[str, str]:
    """Read command-line options written ``key=value`` (values stay strings; the attack's option coerces them)."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"Cannot read attack option {item!r}; expected key=value, e.g. steps=40.")
        result[key.strip()] = value.strip()
    return result


def describe_attacks() -> list[dict[str, Any]]:
    """Return one row per attack (name, norms, black-box, stochastic, source, options with defaults and docs)."""
    rows = []
    for a in ATTACKS.values():
        rows.append(
            {
                "name": a.name,
                "norms": ",".join(a.norms),
                "black_box": a.black_box,
                "stochastic": a.stochastic,
                "compat": a.supports_compat,
                "source": a.source,
                "description": a.description,
                "options": [
                    {"name": o.name, "default": o.default, "type": o.kind, "doc": o.doc} for o in a.options
                ],
            }
        )
    return rows


__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackDefinition",
    "AUTO_EOT_ITER",
    "AttackSpec",
    "COMMON_OPTIONS",
    "Option",
    "WHITE_BOX_OPTIONS",
    "build_attack_spec",
    "describe_attacks",
    "get_attack",
    "parse_options",
    "threat_model_name",
]
