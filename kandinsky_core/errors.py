"""The package's own error type and the checks that word it: every message names what is wrong and how to fix it."""
import torch


class KandinskyError(ValueError):
    """A bad input or model folder, with a message meant for the person who chose the inputs. ``about`` names the
    input the message is about, when it is one, so that a caller can add where such an input comes from."""

    def __init__(self, message: str, about: str | None = None):
        super().__init__(message)
        self.about = about


def describe(x) -> str:
    """What an error says it got: a tensor's shape, or the type of anything else."""
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise KandinskyError(f"{name} holds NaN or infinite values: check what made it.")
