"""Blends of CLIP image embeddings: the reference's weighted sum (``interpolate``) and slerp."""
from __future__ import annotations

import torch

from .errors import KandinskyError, check_finite, describe

METHODS = ("weighted_sum", "slerp")


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of directions, linear of lengths: stays on the shell CLIP embeddings live on."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = (ua * ub).sum(-1, keepdim=True).clamp(-1, 1).acos()
    sin = omega.sin().clamp_min(1e-6)
    straight = omega < 1e-3  # (nearly) parallel: the linear blend is the limit
    wa = torch.where(straight, 1 - t, ((1 - t) * omega).sin() / sin)
    wb = torch.where(straight, t, (t * omega).sin() / sin)
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return direction * ((1 - t) * na + t * nb)


def mix(embeds: list[torch.Tensor], weights: list[float], method: str = "weighted_sum",
        names: list[str] | None = None) -> torch.Tensor:
    """Blend embeddings [B, D] (a batch of 1 is shared across the others).

    ``weighted_sum``: sum of weight_i * embeds_i, exactly KandinskyV22PriorPipeline's ``interpolate``.
    ``slerp``: weights are relative shares (>= 0, not all 0); the embeddings are blended one after another
    along the sphere, each with its share of the total so far, so the order does not bias the result for two.
    """
    if method not in METHODS:
        raise KandinskyError(f"method '{method}' is unknown: pick one of {', '.join(METHODS)}.")
    if len(embeds) != len(weights) or not embeds:
        raise KandinskyError("give as many weights as embeddings, and at least one embedding.")
    widths = {e.shape[-1] for e in embeds}
    if len(widths) > 1 or any(e.ndim != 2 for e in embeds):
        raise KandinskyError(f"embeddings must all be [batch, D] of one width, got "
                             f"{[describe(e) for e in embeds]}: mix embeddings of the same prior.")
    for i, e in enumerate(embeds):
        check_finite(names[i] if names else f"embeds_{i + 1}", e)
    batches = {e.shape[0] for e in embeds} - {1}
    if len(batches) > 1:
        raise KandinskyError(f"embeds have batches {[e.shape[0] for e in embeds]}: give them one batch, or 1.")
    batch = batches.pop() if batches else 1
    embeds = [e.float().expand(batch, -1) for e in embeds]
    if method == "weighted_sum":
        return sum(w * e for w, e in zip(weights, embeds))
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise KandinskyError(f"slerp weights are shares: they must be 0 or more and not all 0, got {weights}.")
    result, total = embeds[0], weights[0]
    for e, w in zip(embeds[1:], weights[1:]):
        total += w
        if w > 0:
            result = _slerp(result, e, w / total) if total > w else e
    return result
