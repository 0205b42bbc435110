"""Threat model ``paper``: the attacks computed as the official evaluation computed them (CleverHans, PyTorch).

The official code (KPCA_code, ``Attack/engine.py``) called CleverHans' PyTorch attacks on the *normalized* tensor
``u = (x - mean) / std``, without labels (so against ``argmax model(u)``) and without bounds. Four of them are
written out here, step for step, defects included, because no other implementation computes what they computed:

* **SPSA** (10 Adam steps, lr 0.01, delta 0.01, 128 x 2 antithetic samples, margin loss, one image at a time, no
  bounds). Defect reproduced: the loss function adds ``u`` to its argument and the gradient estimator already passes
  ``u + d``, so every estimate evaluates the model at ``2u + d`` instead of ``u + d`` (and does not depend on the
  current perturbation). The projection adds ``((u + clip(p)) - u) - p`` in place, as CleverHans does.
* **SLD** (L1, eps 10, step 1, 20 steps, sparsity 99: the run's eps is ignored). Each step moves the coordinates
  whose |gradient| reaches the ``int(q / 100 * d)``-th smallest value by ``sign / (number of them)``; the
  perturbation is then *rescaled* onto the L1 ball (``torch.renorm``), not projected.
* **noise** (uniform in [-0.3, 0.3] per coordinate, drawn on the input's device; the run's eps is ignored).
* **CW-L2** (confidence = the run's eps, 5 binary-search steps x 1000 Adam iterations, lr 0.005, initial constant
  0.01). Defects reproduced: the *normalized* input is clamped to [0, 1] (CleverHans' default ``clip_min=0,
  clip_max=1``), so the attack searches, and returns when it fails, the clamped image; the constants of shape
  ``[N, 1]`` broadcast against the per-sample loss ``[N]``, so the batch's loss is
  ``sum_i c_i * sum_j f_j + N * sum_j l2_j`` (each sample's classification term weighted by the sum of the batch's
  constants); Adam's state and the modifier carry over between binary-search steps. There is no budget: the cell's
  eps is CW's confidence.

PGD, FGSM, AutoAttack and the other attacks compute in the paper threat model what CleverHans' versions compute,
through the compatibility mode's reparametrisation (:mod:`robustbench_rpc.attacks.protocol`): normalized space,
scalar eps, clean predictions, no clamping.

Checked against the official code (rachtsy/KPCA_code at 017fa4e, ``Attack/engine.py::evaluate`` and
``Attack/main.py``): the calls are ``projected_gradient_descent(model, x, eps, 0.15 * eps, 20, inf)``,
``fast_gradient_method(model, x, eps, inf)``, ``spsa(model, x, eps, 10)``, ``sparse_l1_descent(model, x)``,
``noise(x)`` and ``carlini_wagner_l2(model, x, 1000, confidence=eps)`` (1000 is ``n_classes``), all with CleverHans'
other defaults and ``y=None``; the loader normalizes, so the attacks see normalized tensors; the final forward runs
under ``torch.cuda.amp.autocast()``; the seed is ``args.seed + rank`` and, without ``--dist_eval``, every rank
attacks all images (``SequentialSampler``) and the logged accuracy averages over the ranks. ``--attack`` offers
pgd, fgm, sld, noise, cw and spsa: the official code has **no AutoAttack**, so this package's ``paper`` AutoAttack
(standard, normalized space, clean predictions) is its own construction, not a reproduction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rpc.attacks.registry import AttackSpec

#: The attacks written out here; the others run through the compatibility mode.
WRITTEN_HERE = ("spsa", "sld", "noise", "cw")
#: The official SLD and noise settings (normalized units), used whatever the run's eps.
PAPER_SLD = {"eps": 10.0, "step": 1.0, "steps": 20, "sparsity": 99.0}
PAPER_NOISE_EPS = 0.3
#: CleverHans' CW-L2 binary-search steps (the official call kept the default).
CW_BINARY_SEARCH_STEPS = 5
#: The official attack budgets that do not come from ``--eps``: attack -> (norm, eps).
FIXED_BUDGETS = {"sld": ("L1", PAPER_SLD["eps"]), "noise": ("Linf", PAPER_NOISE_EPS)}


def margin_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Return the largest wrong logit minus the label's logit, per sample."""
    correct = logits.gather(1, labels[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return wrong - correct


def _project_in_place(perturbation: Tensor, u: Tensor, eps: float) -> None:
    """CleverHans' Linf projection without bounds: ``p += ((u + clip(p, eps)) - u) - p`` in place."""
    with torch.no_grad():
        perturbation.add_((u + perturbation.clamp(-eps, eps) - u) - perturbation)


def official_spsa(model: nn.Module, u: Tensor, labels: Tensor, eps: float, *, steps: int, samples: int,
                  delta: float, lr: float) -> Tensor:
    """SPSA as the official evaluation ran it, one image at a time; see the module docstring (2u + d)."""
    return torch.cat([_spsa_one(model, u[i:i + 1], labels[i:i + 1], eps, steps, samples, delta, lr)
                      for i in range(len(u))])


def _spsa_one(model: nn.Module, u: Tensor, label: Tensor, eps: float, steps: int, samples: int, delta: float,
              lr: float) -> Tensor:
    """One image: random start, then ``steps`` Adam updates from SPSA estimates made at ``2u + d``."""
    if eps == 0:
        return u
    perturbation = (torch.rand_like(u) * 2 - 1) * eps
    _project_in_place(perturbation, u, eps)
    optimizer = torch.optim.Adam([perturbation], lr=lr)
    batch = u.expand(samples, *u.shape[1:])
    for _ in range(steps):
        d = delta * torch.sign(torch.rand_like(batch) - 0.5)
        d = torch.cat([d, -d])
        with torch.no_grad():
            # the defect: the estimator passes u + d to a loss that evaluates the model at u + its argument
            loss = -margin_loss(model(u + (u + d)), label.expand(len(d)))
        grad = (loss.view(-1, *([1] * (u.dim() - 1))) * torch.sign(d)).mean(dim=0, keepdim=True) / delta
        perturbation.grad = grad
        optimizer.step()
        _project_in_place(perturbation, u, eps)
    return (u + perturbation).detach()


def official_sld(model: nn.Module, u: Tensor, labels: Tensor, *, eps: float, step: float, steps: int,
                 sparsity: float) -> Tensor:
    """Sparse L1 descent as CleverHans computed it: no bounds, ties shared, L1 rescaling by ``torch.renorm``."""
    adv = u.clone()
    for _ in range(steps):
        adv = adv.detach().float().requires_grad_(True)
        loss = F.cross_entropy(model(adv), labels, reduction="none").mean()
        grad = torch.autograd.grad(loss, adv)[0]
        flat = grad.view(len(grad), -1)
        magnitude = flat.abs()
        k = max(int(sparsity / 100.0 * magnitude.shape[1]), 1)
        threshold = magnitude.kthvalue(k, dim=1, keepdim=True).values
        chosen = (magnitude >= threshold).float()
        direction = (torch.sign(flat) * chosen / chosen.sum(dim=1, keepdim=True)).view_as(grad)
        adv = adv.detach() + direction * step
        adv = u + (adv - u).renorm(p=1, dim=0, maxnorm=eps)
    return adv.detach()


def official_noise(u: Tensor, eps: float = PAPER_NOISE_EPS) -> Tensor:
    """Uniform noise in [-eps, eps] per coordinate, float32, drawn on ``u``'s device (as the official call)."""
    noise = torch.empty(u.shape, dtype=torch.float32, device=u.device).uniform_(-eps, eps)
    return u + noise.to(u.dtype)


def official_cw(model: nn.Module, u: Tensor, labels: Tensor, *, confidence: float, steps: int, lr: float,
                initial_const: float, binary_search_steps: int = CW_BINARY_SEARCH_STEPS,
                n_classes: int | None = None) -> Tensor:
    """CleverHans' CW-L2 on the normalized input with its default clamp to [0, 1]; see the module docstring."""
    n = len(u)
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(u[:1]).shape[1])
    const = u.new_ones(n, 1) * initial_const
    lower = u.new_zeros(n)
    upper = u.new_full((n,), 1e10)
    o_best_l2 = u.new_full((n,), float("inf"))
    x = u.clamp(0.0, 1.0)  # the defect: the normalized tensor is clamped to CleverHans' default pixel box
    original = x.clone().detach()
    o_best_attack = x.clone().detach()
    w = torch.arctanh((x.clamp(0.0, 1.0) * 2 - 1) * 0.999999)
    modifier = torch.zeros_like(w, requires_grad=True)
    onehot = F.one_hot(labels, n_classes).to(u.dtype)
    optimizer = torch.optim.Adam([modifier], lr=lr)
    zero = torch.tensor(0.0, device=u.device)
    rows = torch.arange(n, device=u.device)
    for _ in range(binary_search_steps):
        best_l2 = u.new_full((n,), float("inf"))
        best_score = torch.full((n,), -1, dtype=torch.long, device=u.device)
        for _ in range(steps):
            new_x = (torch.tanh(modifier + w) + 1) / 2
            logits = model(new_x)
            real = (onehot * logits).sum(dim=1)
            other = ((1 - onehot) * logits - onehot * 1e4).max(dim=1).values
            optimizer.zero_grad()
            f = torch.max(real - other + confidence, zero)
            l2 = (new_x - original).pow(2).sum(list(range(1, new_x.dim())))
            loss = (const * f + l2).sum()  # [N, 1] * [N]: the broadcast of the official code, kept
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                shifted = logits.detach().clone()
                shifted[rows, labels] += confidence
                succeeded = shifted.argmax(dim=1) != labels
                l2 = l2.detach()
                pred = logits.detach().argmax(dim=1)
                improve_inner = succeeded & (l2 < best_l2)
                improve_outer = succeeded & (l2 < o_best_l2)
                best_l2 = torch.where(improve_inner, l2, best_l2)
                best_score = torch.where(improve_inner, pred, best_score)
                o_best_l2 = torch.where(improve_outer, l2, o_best_l2)
                o_best_attack[improve_outer] = new_x.detach()[improve_outer]
        with torch.no_grad():
            success = (best_score != labels) & (best_score != -1)
            c = const.squeeze(1)
            upper = torch.where(success, torch.minimum(upper, c), upper)
            lower = torch.where(success, lower, torch.maximum(lower, c))
            bisect = (lower + upper) / 2
            c = torch.where(upper < 1e9, bisect, torch.where(success, c, c * 10))
            const = c.unsqueeze(1)
    return o_best_attack.detach()


def run_official(model: nn.Module, u: Tensor, labels: Tensor, spec: AttackSpec, n_classes: int) -> Tensor:
    """Run the official version of ``spec`` (spsa, sld, noise or cw) on normalized ``u`` against ``labels``."""
    p = spec.params
    if spec.name == "spsa":
        return official_spsa(model, u, labels, spec.eps, steps=int(p["steps"]), samples=int(p["samples"]),
                             delta=float(p["delta"]), lr=float(p["lr"]))
    if spec.name == "sld":
        step = p.get("abs_stepsize")
        return official_sld(model, u, labels, eps=spec.eps,
                            step=float(step) if step is not None else float(p["rel_stepsize"]) * spec.eps,
                            steps=int(p["steps"]), sparsity=float(p["sparsity"]))
    if spec.name == "noise":
        return official_noise(u, spec.eps)
    if spec.name == "cw":
        return official_cw(model, u, labels, confidence=spec.eps, steps=int(p["steps"]), lr=float(p["lr"]),
                           initial_const=float(p["c"]), n_classes=n_classes)
    raise ValueError(f"{spec.name} has no official version written here")
