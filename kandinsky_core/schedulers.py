"""Stepping through a noise schedule: the decoder's scheduler choices (each built from the model's own scheduler
config), and what the prior's and the decoder's runs share: seeded noise, the per-step callback, the guidance check
and the first step of a run that starts from an embedding or a picture."""
from __future__ import annotations

import inspect
import math
from typing import Callable

import diffusers
import torch

from .errors import KandinskyError, describe

SEED_MAX = 0xFFFFFFFFFFFFFFFF
StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, step count, current sample)


def generator(seed: int | torch.Generator) -> torch.Generator:
    """The CPU generator every run draws its noise from, whatever device runs the models: a new one seeded with
    ``seed``, or ``seed`` itself when it is a generator, for a run that draws on where another stopped (diffusers'
    combined pipelines hand the prior's generator on to the decoder)."""
    if isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise KandinskyError(f"seed is {seed}: it must be between 0 and 2^64-1.")
    return torch.Generator("cpu").manual_seed(seed)


def resumed(state) -> torch.Generator:
    """A CPU generator set to ``state``, a generator's ``get_state()``: where a prior's run left its noise."""
    size = torch.Generator("cpu").get_state().numel()
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.numel() != size:
        raise KandinskyError(f"noise must be a CPU generator's state ({size} bytes), got {describe(state)}: wire in "
                             "the noise output of a Kandinsky 2.2 prior node.", "noise")
    return torch.Generator("cpu").set_state(state.cpu())


def check_guidance(guidance_scale: float) -> None:
    if not math.isfinite(guidance_scale):
        raise KandinskyError(f"guidance_scale is {guidance_scale}: give a number such as 4.0.")


def start_step(steps: int, strength: float) -> int:
    """The first of ``steps`` steps that a run from a start noised to ``strength`` takes: the pipelines'
    ``get_timesteps`` (KandinskyV22Img2ImgPipeline, KandinskyV22PriorEmb2EmbPipeline and the ControlNet one)."""
    if not 0 <= strength <= 1:
        raise KandinskyError(f"strength is {strength}: it must be between 0 and 1.")
    return steps - min(int(steps * strength), steps)

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
    """Pass the generator only to schedulers whose step takes one (the rule of diffusers' prepare_extra_step_kwargs)."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
