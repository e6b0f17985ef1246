"""fp8 weight storage (the loaders' dtype fp8_e4m3fn / fp8_e5m2): the UNet's and the CLIP encoders' linear and
convolution weights in 8 bits, computed in the dtype auto picks by casting them as each layer runs."""
import pytest
import torch

import reference
from helpers import DECODER_ID, PRIOR_ID
from kandinsky_core.loading import FP8

STORED = (torch.nn.Linear, torch.nn.Conv2d)
# Measured on the tiny models (fp8 against fp32, the same seeds; README): embeddings 5.0 % (e4m3fn) and 14.4 % (e5m2)
# off in relative norm; pictures off by 0.17 and 0.26 of what another seed changes (mean absolute difference).
BOUNDS = {"fp8_e4m3fn": {"embeds": 0.08, "pixels": 0.3}, "fp8_e5m2": {"embeds": 0.2, "pixels": 0.4}}


def gpu_bytes(module: torch.nn.Module) -> int:
    """The bytes of a module's weights where it computes in fp16 (a GPU's auto; here on the CPU it computes in fp32):
    each fp8 weight 1 byte an element, every other 2."""
    return sum(p.numel() * (1 if p.dtype in FP8.values() else 2) for p in module.parameters())


@pytest.mark.parametrize("storage", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_storage_halves_fp16s_bytes_and_paints_close_to_fp32(run_node, storage):
    decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype=storage)
    half = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="fp16")[0]
    full = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="fp32")[0]
    kept = {n for n, m in decoder.unet.named_modules() if isinstance(m, STORED) and m.weight.dtype != FP8[storage]}
    assert kept == {"encoder_hid_proj.image_embeds"}  # diffusers casts the embeddings to its weight's dtype
    fp8_bytes, fp16_bytes = gpu_bytes(decoder.unet), gpu_bytes(half.unet)
    print(f"{storage}: UNet {fp8_bytes} bytes, fp16 {fp16_bytes}")
    assert fp8_bytes <= 0.6 * fp16_bytes

    prior = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype=storage)[0]
    prior32 = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="fp32")[0]
    assert {n for e in (prior.text_encoder, prior.image_encoder) for n, m in e.named_modules()
            if isinstance(m, STORED) and m.weight.dtype != FP8[storage]} == {"vision_model.embeddings.patch_embedding"}
    inputs = dict(prompt="a red cat", negative_prompt="", guidance_scale=4.0, steps=3, seed=5, batch_size=1)
    embeds = run_node("Kandinsky22PriorEncode", prior=prior, **inputs)[:2]
    embeds32 = run_node("Kandinsky22PriorEncode", prior=prior32, **inputs)[:2]
    pictures = []
    for unet_owner, (positive, negative), seed in ((decoder, embeds, 6), (full, embeds32, 6), (full, embeds32, 7)):
        (latent,) = run_node("Kandinsky22Txt2Img", decoder=unet_owner, positive=positive, negative=negative, width=64,
                             height=64, steps=3, guidance_scale=4.0, seed=seed, scheduler="default", batch_size=1)
        pictures.append(run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)[0])
    assert all(torch.isfinite(t).all() for t in (*embeds, *pictures))
    # Relative error of the embeddings; the pictures' mean difference beside that of another seed (random tiny
    # models turn small changes into large ones at some pixels, so the largest difference says little).
    embeds_off = max(float((a - b).norm() / b.norm()) for a, b in zip(embeds, embeds32))
    pixels_off = float((pictures[0] - pictures[1]).abs().mean() / (pictures[2] - pictures[1]).abs().mean())
    print(f"{storage}: embeddings off by {embeds_off:.4f} (relative), pixels by {pixels_off:.3f} of another seed's")
    assert embeds_off <= BOUNDS[storage]["embeds"] and pixels_off <= BOUNDS[storage]["pixels"]
