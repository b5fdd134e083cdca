"""Temperature scaling: one scalar T so that softmax(logits / T) is calibrated on held-out data."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iters: int = 100) -> float:
    """Minimise the validation NLL over log T with L-BFGS (Guo et al., 2017). Returns T > 0."""
    logits = logits.detach().float()
    labels = labels.long()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp())
    return t if 0.05 < t < 20 else 1.0
