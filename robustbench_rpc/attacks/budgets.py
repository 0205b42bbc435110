"""Perturbation budgets: eps parsing (fractions of 255), norm names, norm measurement and budget verification.

Budgets are in pixel units of images in [0, 1]. ``parse_eps`` is torch-free so that the CLI can validate ``--eps``
without importing torch; the measuring functions import torch when called.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import TYPE_CHECKING

from robustbench_rpc.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

#: Norm names as written everywhere (cells, records, options).
NORMS: tuple[str, ...] = ("Linf", "L2", "L1")

_NORM_ALIASES = {
    "linf": "Linf",
    "inf": "Linf",
    "l_inf": "Linf",
    "li": "Linf",
    "l2": "L2",
    "2": "L2",
    "l_2": "L2",
    "l1": "L1",
    "1": "L1",
    "l_1": "L1",
}

#: Default step of an eps range ``a:b`` (one 8-bit grey level).
DEFAULT_EPS_STEP = 1 / 255

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class BudgetViolationError(RuntimeError):
    """An attack returned a perturbation outside its budget or an image outside [0, 1]: a bug, not a result."""


def normalize_norm(norm: str) -> str:
    """Return the canonical norm name ('Linf', 'L2', 'L1') for a spelling such as 'linf', 'inf' or '2'."""
    key = str(norm).strip().lower()
    if key in _NORM_ALIASES:
        return _NORM_ALIASES[key]
    raise UserError(f"Unknown norm {norm!r}; expected one of {', '.join(NORMS)}.")


def _parse_number(text: str) -> Fraction | float:
    """Parse '8/255', '0.03' or '3e-2' exactly where possible (a Fraction for 'a/b', else a float)."""
    text = text.strip()
    if "/" in text:
        num, _, den = text.partition("/")
        if not (_NUMBER.match(num.strip()) and _NUMBER.match(den.strip())):
            raise UserError(
                f"Cannot read eps {text!r}; expected a number such as 0.03 or a fraction such as 8/255."
            )
        den_value = Fraction(den.strip())
        if den_value == 0:
            raise UserError(f"Cannot read eps {text!r}: division by zero.")
        return Fraction(num.strip()) / den_value
    if not _NUMBER.match(text):
        raise UserError(
            f"Cannot read eps {text!r}; expected a number such as 0.03 or a fraction such as 8/255."
        )
    return float(text)


def _check_eps(value: float, text: str, norm: str) -> float:
    """Validate one eps value for ``norm``; return it as a float."""
    if not math.isfinite(value):
        raise UserError(f"eps {text!r} is not a finite number.")
    if value < 0:
        raise UserError(f"eps {text!r} is negative; a perturbation budget must be >= 0.")
    if norm == "Linf" and value > 1:
        hint = ""
        if value <= 255:
            hint = f" (did you mean {text.strip()}/255?)"
        raise UserError(
            f"eps {text!r} is above 1, but Linf budgets are in pixel units of images in [0, 1]{hint}."
        )
    return float(value)


def parse_number(text: str) -> float:
    """Parse a number written '2/255', '0.03' or '3e-2' (UserError otherwise)."""
    return float(_parse_number(str(text)))


def validate_eps(eps: float, norm: str = "Linf") -> float:
    """Check a numeric budget for ``norm`` (finite, >= 0, <= 1 for Linf) and return it as a float."""
    return _check_eps(float(eps), f"{float(eps):g}", normalize_norm(norm))


def parse_eps_value(text: str, *, norm: str = "Linf") -> float:
    """Parse one budget such as '8/255' or '0.03' and validate it for ``norm``."""
    return _check_eps(float(_parse_number(text)), text, normalize_norm(norm))


def parse_eps(text: str, *, norm: str = "Linf") -> list[float]:
    """Parse a budget list: '8/255', '0.03', '1/255,2/255', or a range 'a:b' (step 1/255) / 'a:b:step'.

    Ranges include both ends (within rounding). Linf budgets above 1 are rejected with a hint that 0-255 units
    were probably meant; L2 / L1 budgets may exceed 1. Duplicates are dropped, order is kept.
    """
    norm = normalize_norm(norm)
    if text is None or not str(text).strip():
        raise UserError("No eps given; expected e.g. 8/255, 1/255,2/255 or a range 1/255:6/255.")
    values: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise UserError(f"Empty item in eps list {text!r}; expected comma-separated budgets.")
        if ":" in part:
            pieces = part.split(":")
            if len(pieces) not in (2, 3):
                raise UserError(f"Cannot read eps range {part!r}; expected start:stop or start:stop:step.")
            start = _parse_number(pieces[0])
            stop = _parse_number(pieces[1])
            step = _parse_number(pieces[2]) if len(pieces) == 3 else Fraction(1, 255)
            _check_eps(float(start), pieces[0], norm)
            _check_eps(float(stop), pieces[1], norm)
            if float(step) <= 0:
                raise UserError(f"The step of eps range {part!r} must be > 0.")
            if float(stop) < float(start):
                raise UserError(f"eps range {part!r} runs backwards; expected start <= stop.")
            count = math.floor((float(stop) - float(start)) / float(step) + 1e-9)
            if count > 10_000:
                raise UserError(f"eps range {part!r} has more than 10000 values; use a larger step.")
            values.extend(float(start + step * i) for i in range(count + 1))
        else:
            values.append(_check_eps(float(_parse_number(part)), part, norm))
    seen: list[float] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def format_eps(eps: float) -> str:
    """Write a budget the way the CLI reads it: '8/255' when it is a whole number of 255ths, else '%g'."""
    scaled = eps * 255
    if abs(scaled - round(scaled)) < 1e-6 and eps != 0:
        return f"{round(scaled)}/255"
    return f"{eps:g}"


def perturbation_norms(clean: Tensor, adv: Tensor) -> dict[str, Tensor]:
    """Return per-sample Linf, L2 and L1 norms of ``adv - clean`` (float64 accumulation, float32 result)."""
    import torch

    delta = (adv.detach() - clean.detach()).flatten(1).to(torch.float64)
    return {
        "Linf": delta.abs().amax(dim=1).float() if delta.shape[1] else delta.new_zeros(len(delta)).float(),
        "L2": delta.square().sum(dim=1).sqrt().float(),
        "L1": delta.abs().sum(dim=1).float(),
    }


def budget_tolerance(eps: float, norm: str, n_features: int, value_scale: float = 1.0) -> float:
    """Return the allowed excess of a measured norm over ``eps``: 1e-6 relative plus float32 rounding.

    Float32 rounding of ``adv - clean`` costs at most about 2 ulp of the largest pixel value per coordinate
    (``value_scale`` is that largest magnitude: 1 for pixels in [0, 1]); it adds up over ``sqrt(d)`` coordinates
    for L2 and ``d`` for L1.
    """
    per_coordinate = 2.0 * 1.1920929e-07 * max(value_scale, 1.0)
    growth = {"Linf": 1.0, "L2": math.sqrt(n_features), "L1": float(n_features)}[normalize_norm(norm)]
    return 1e-6 * eps + per_coordinate * growth


def check_budget(
    clean: Tensor,
    adv: Tensor,
    norm: str,
    eps: float,
    tol: float | None = None,
    *,
    box: tuple[float, float] | None = (0.0, 1.0),
    what: str = "attack",
) -> dict[str, Tensor]:
    """Verify that every ``adv`` lies within ``eps`` of ``clean`` in ``norm`` (and in ``box``); return the norms.

    Raises :class:`BudgetViolationError` naming the worst sample when a norm exceeds ``eps + tol`` or a pixel leaves
    ``box`` (None skips the box check), and when ``adv`` contains NaN or has the wrong shape.
    """
    import torch

    norm = normalize_norm(norm)
    if adv.shape != clean.shape:
        raise BudgetViolationError(
            f"{what} returned shape {tuple(adv.shape)} for inputs of shape {tuple(clean.shape)}."
        )
    if torch.isnan(adv).any():
        raise BudgetViolationError(f"{what} returned NaN pixels.")
    norms = perturbation_norms(clean, adv)
    n_features = clean[0].numel() if len(clean) else 1
    scale = float(clean.detach().abs().max()) if clean.numel() else 1.0
    if tol is None:
        tol = budget_tolerance(eps, norm, n_features, value_scale=scale)
    excess = norms[norm].double() - eps
    if len(excess) and float(excess.max()) > tol:
        worst = int(excess.argmax())
        raise BudgetViolationError(
            f"{what} exceeded its {norm} budget: sample {worst} has norm {float(norms[norm][worst]):.9g} "
            f"> eps {eps:.9g} (+ tolerance {tol:.3g})."
        )
    if box is not None and adv.numel():
        low, high = float(adv.min()), float(adv.max())
        if low < box[0] or high > box[1]:
            raise BudgetViolationError(
                f"{what} returned pixels outside [{box[0]:g}, {box[1]:g}] (min {low:.9g}, max {high:.9g})."
            )
    return norms
