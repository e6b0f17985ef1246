"""The package's own error type: every message names what is wrong and how to fix it."""


class KandinskyError(ValueError):
    """A bad input or model folder, with a message meant for the person who wired the graph."""


SEED_MAX = 0xFFFFFFFFFFFFFFFF


def generator(seed: int):
    """The CPU generator every run draws its noise from, whatever device runs the models."""
    import torch

    if not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise KandinskyError(f"seed is {seed}: it must be between 0 and 2^64-1.")
    return torch.Generator("cpu").manual_seed(seed)


def check_guidance(guidance_scale: float) -> None:
    import math

    if not math.isfinite(guidance_scale):
        raise KandinskyError(f"guidance_scale is {guidance_scale}: give a number such as 4.0.")


def check_finite(name: str, tensor) -> None:
    import torch

    if not torch.isfinite(tensor).all():
        raise KandinskyError(f"{name} holds NaN or infinite values: check the nodes that made it.")
