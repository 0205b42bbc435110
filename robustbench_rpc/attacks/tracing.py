"""Attack traces: what an audit needs to know about a white-box attack's optimisation, per sample.

:class:`AttackTracer` wraps the model an attack sees. Every forward pass on the whole batch (the attack's iterates)
is observed: the cross-entropy of each sample against the attack labels at every gradient evaluation (the loss
trace), whether any point the attack evaluated inside the budget was misclassified, the best such point (lowest
margin ``logit[label] - max other logit``), and, through a tensor hook, the norm of the input gradient and whether it
was zero or non-finite. Forward passes on a part of the batch (AutoAttack and APGD evaluate only the samples still
robust) cannot be attributed to samples and are not observed.

The tracer returns exactly the wrapped model's output, so the attack runs as it would without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The loss trace kept per sample: at most this many points (first and last always kept).
MAX_TRACE_POINTS = 33


def thin_trace(values: list[float], limit: int = MAX_TRACE_POINTS) -> list[float]:
    """Return at most ``limit`` evenly spaced points of ``values``, first and last included."""
    n = len(values)
    if n <= limit:
        return list(values)
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [values[i] for i in picks]


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """Return ``logit[label] - max other logit`` per sample (negative: misclassified)."""
    logits = logits.detach().float()
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels.view(-1, 1), float("-inf"))
    return true - others.amax(dim=1)


@dataclass
class TraceSummary:
    """Per-sample trace results of one attacked batch (CPU tensors and lists, one entry per sample)."""

    loss: list[list[float]]
    steps: Tensor
    grad_norm0: Tensor
    grad_zero: Tensor
    grad_nonfinite: Tensor
    iterate_adv: Tensor
    best: Tensor | None  # the best in-budget iterate per sample (None when no forward pass was observed)
    best_adv: Tensor  # that best iterate was misclassified when the attack evaluated it

    @classmethod
    def empty(cls, n: int) -> TraceSummary:
        """A summary for an attack that was not traced (black-box attacks, transfer, eps = 0)."""
        return cls(
            loss=[[] for _ in range(n)],
            steps=torch.zeros(n, dtype=torch.long),
            grad_norm0=torch.full((n,), float("nan")),
            grad_zero=torch.zeros(n, dtype=torch.long),
            grad_nonfinite=torch.zeros(n, dtype=torch.long),
            iterate_adv=torch.zeros(n, dtype=torch.bool),
            best=None,
            best_adv=torch.zeros(n, dtype=torch.bool),
        )


class AttackTracer(nn.Module):
    """Wrap ``model`` during one attack on ``clean`` / ``labels`` and record its iterates (see the module doc).

    ``in_budget(x)`` returns a per-sample bool mask of the points that respect the threat model (budget and box);
    only those count as iterates that could be returned.
    """

    def __init__(self, model: nn.Module, clean: Tensor, labels: Tensor, in_budget: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.labels = labels
        self.in_budget = in_budget
        self._shape = tuple(clean.shape)
        n = len(clean)
        device = clean.device
        self._losses: list[Tensor] = []
        self._grad_norm0 = torch.full((n,), float("nan"), device=device)
        self._grad_zero = torch.zeros(n, dtype=torch.long, device=device)
        self._grad_nonfinite = torch.zeros(n, dtype=torch.long, device=device)
        self._iterate_adv = torch.zeros(n, dtype=torch.bool, device=device)
        self._best_margin = torch.full((n,), float("inf"), device=device)
        self._best: Tensor | None = None
        self._seen_grad = False

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if tuple(x.shape) == self._shape and out.dim() == 2:
            self._observe(x, out)
        return out

    def _observe(self, x: Tensor, out: Tensor) -> None:
        labels = self.labels.to(out.device)
        with torch.no_grad():
            margin = margins(out, labels)
            inside = self.in_budget(x.detach()).to(margin.device)
            self._iterate_adv |= (margin < 0) & inside
            better = inside & (margin < self._best_margin)
            if self._best is None:
                self._best = x.detach().clone()
            if bool(better.any()):
                self._best[better] = x.detach()[better].to(self._best.dtype)
                self._best_margin = torch.where(better, margin, self._best_margin)
        if torch.is_grad_enabled() and x.requires_grad and out.requires_grad:
            with torch.no_grad():
                self._losses.append(F.cross_entropy(out.detach().float(), labels, reduction="none"))
            x.register_hook(self._gradient_hook)

    def _gradient_hook(self, grad: Tensor) -> None:
        with torch.no_grad():
            flat = grad.detach().flatten(1)
            finite = torch.isfinite(flat).all(dim=1)
            norm = torch.nan_to_num(flat.double(), nan=0.0, posinf=0.0, neginf=0.0).norm(dim=1).float()
            self._grad_nonfinite += (~finite).long()
            self._grad_zero += (finite & (norm == 0)).long()
            if not self._seen_grad:
                self._grad_norm0 = torch.where(finite, norm, torch.full_like(norm, float("nan")))
                self._seen_grad = True

    def summary(self) -> TraceSummary:
        """Return what was observed, on the CPU."""
        n = self._shape[0]
        if self._losses:
            stacked = torch.stack(self._losses, dim=1).cpu()  # [n, gradient evaluations]
            losses = [thin_trace([float(v) for v in row]) for row in stacked]
            steps = torch.full((n,), stacked.shape[1], dtype=torch.long)
        else:
            losses = [[] for _ in range(n)]
            steps = torch.zeros(n, dtype=torch.long)
        return TraceSummary(
            loss=losses,
            steps=steps,
            grad_norm0=self._grad_norm0.cpu(),
            grad_zero=self._grad_zero.cpu(),
            grad_nonfinite=self._grad_nonfinite.cpu(),
            iterate_adv=self._iterate_adv.cpu(),
            best=self._best,
            best_adv=(self._best_margin < 0).cpu(),
        )
