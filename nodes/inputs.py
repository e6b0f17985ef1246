"""The input specs that more than one node declares, as ComfyUI's V1 INPUT_TYPES takes them: (type, options). A spec
only one node has stays in that node."""
from ..kandinsky_core import loading, schedulers
from ..kandinsky_core.loading import CONTROLNET, DECODER_HUB_IDS, INPAINT, TEXT2IMG
from ..kandinsky_core.schedulers import SEED_MAX

DECODER_WORDS = {TEXT2IMG: "text-to-image", INPAINT: "inpaint", CONTROLNET: "ControlNet depth"}  # kind -> UI words

DTYPE = (["auto", *loading.DTYPES, *loading.FP8], {"default": "auto", "tooltip": (
    "Weights' precision. auto follows ComfyUI: fp16 on a CUDA GPU, fp32 on the CPU (--force-fp32 and friends hold). "
    "fp8 stores the big weights (the UNet's, the CLIP encoders') in 8 bits, half of fp16's memory, and computes as "
    "auto does, at some cost in fidelity.")})
PRIOR = ("K22_PRIOR", {"tooltip": "From Kandinsky 2.2 Prior Loader."})
MOVQ = ("K22_MOVQ", {"tooltip": "From Kandinsky 2.2 Decoder Loader."})
PROMPT = ("STRING", {"multiline": True, "default": "", "tooltip":
          "What to paint. CLIP reads at most 77 tokens; the rest is cut off."})
SEED = ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": "Seed of the noise (CPU generator)."})
LATENT = ("LATENT", {"tooltip": "The picture to start from, from Kandinsky 2.2 MoVQ Encode."})
HINT = ("IMAGE", {"tooltip": "The depth hint: Kandinsky 2.2 Depth Hint, or any depth map (white = near); resized to "
                             "the output size."})
POSITIVE = ("K22_EMBEDS", {"tooltip": "Image embeddings to paint (from a prior or embeds node)."})
NEGATIVE = ("K22_EMBEDS", {"tooltip": "Image embeddings to steer away from (a prior's negative)."})
NOISE = ("K22_NOISE", {"tooltip": "Optional: a prior node's noise. The decoder then draws its noise on from where the "
                                  "prior left it and seed is not used: the pixels of diffusers' combined pipelines, "
                                  "which hand one generator from prior to decoder."})
BATCH = ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Pictures per embedding."})

# What to wire into an input of each type: added to a core error about that input.
WIRE_IN = {"K22_EMBEDS": "wire in the embeddings of a Kandinsky 2.2 prior or embeds node",
           "LATENT": "wire in the LATENT of Kandinsky 2.2 MoVQ Encode or of a Kandinsky 2.2 decoder node",
           "MASK": "wire in a MASK (1 = repaint), such as LoadImage's"}


def image(tooltip: str) -> tuple:
    return ("IMAGE", {"tooltip": tooltip})


def prior_inputs() -> dict:
    """The prior's inputs after prompt (and image, strength), in the node contract's order."""
    return {
        "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                            "What to avoid (77 tokens at most). Empty means none: the negative is then the "
                            "embedding of an empty picture."}),
        "guidance_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                           "How strongly the prior follows the prompt; 1 or less turns guidance off."}),
        "steps": ("INT", {"default": 25, "min": 2, "max": 1000, "tooltip": "Prior denoising steps (at least 2)."}),
        "seed": SEED,
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Embeddings to make."}),
    }


def embeds_inputs(kind: str) -> dict:
    """A decoder node's first inputs: the decoder of ``kind`` and the embeddings."""
    return {
        "decoder": ("K22_DECODER", {"tooltip": f"From Kandinsky 2.2 Decoder Loader: the {DECODER_WORDS[kind]} "
                                               f"decoder ({loading.home(DECODER_HUB_IDS[kind])})."}),
        "positive": POSITIVE,
        "negative": NEGATIVE,
    }


def size_inputs() -> dict:
    return {name: ("INT", {"default": 768, "min": 64, "max": 4096, "step": 64, "tooltip":
                           f"{name.capitalize()} in pixels; rounded up to the MoVQ's grid (64 px for the real model)."})
            for name in ("width", "height")}


def strength_input(default: float) -> dict:
    return {"strength": ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "How much of the picture is repainted: 0 keeps it, 1 paints anew."})}


def sampler_inputs() -> dict:
    """The inputs every decoder node shares, in the order the node contract gives them."""
    return {
        "steps": ("INT", {"default": 50, "min": 1, "max": 999, "tooltip": "Decoder denoising steps."}),
        "guidance_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                           "How strongly the picture follows positive over negative; 1 or less turns it off."}),
        "seed": SEED,
        "scheduler": (schedulers.NAMES, {"default": "default", "tooltip":
                      "default is the model's own DDPM scheduler (the diffusers result); the others need "
                      "fewer steps (about 20)."}),
    }
