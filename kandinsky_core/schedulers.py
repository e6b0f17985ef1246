"""The decoder's scheduler choices, each built from the model's own scheduler config."""
from __future__ import annotations

import inspect

import diffusers

from .errors import KandinskyError

# name -> (diffusers class name, overrides of the model's config). variance_type None guards DPM-Solver against a
# config with a learned variance (the real decoder's is fixed_small): it would cut the UNet output to 3 channels.
SCHEDULERS = {
    "default": (None, {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"variance_type": None}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"variance_type": None, "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
}
NAMES = list(SCHEDULERS)


def make_scheduler(name: str, config: dict):
    """A fresh scheduler (they keep per-run state) of choice ``name`` from the decoder's config."""
    if name not in SCHEDULERS:
        raise KandinskyError(f"scheduler '{name}' is unknown: pick one of {', '.join(NAMES)}.")
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, class_name or config["_class_name"])
    return cls.from_config(config, **overrides)


def step_kwargs(scheduler, generator) -> dict:
    """Pass the generator only to schedulers whose step takes one."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
