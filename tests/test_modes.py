"""Every decode mode of kandinsky_core against its diffusers pipeline on the same tiny weights and seeds."""
import numpy as np
import pytest
import torch
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import prepare_mask
from PIL import Image

import reference
import tiny_models
from kandinsky_core import KandinskyError, loading, movq, sampling

SIZE = 64


@pytest.fixture(scope="module")
def decoders(models_dir):
    return {kind: loading.load_decoder(models_dir / tiny_models.NAMES[kind]) for kind in loading.DECODER_KINDS}


@pytest.fixture(scope="module")
def embeds(models_dir):
    return reference.prior(models_dir, "a red cat", "low quality", steps=3, seed=11)


def picture(seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def as_tensor(pil):
    """A PIL picture as the BCHW 0..1 tensor the nodes make from ComfyUI's IMAGE."""
    return torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def pixels(mq, latents):
    return movq.decode(mq, latents).permute(0, 2, 3, 1)


def test_prepare_mask_matches_the_reference():
    keep = (torch.rand(3, 1, 9, 7) > 0.3).float()
    assert torch.equal(sampling.grow_repaint(keep), prepare_mask(keep.clone()))


def test_img2img_matches_diffusers(decoders, embeds, models_dir):
    decoder, mq = decoders["text2img"]
    image = picture(1)
    latents = sampling.img2img(decoder, *embeds, latents=movq.encode(mq, as_tensor(image)), strength=0.5,
                               steps=6, seed=3)
    expected = reference.decode(models_dir, "img2img", *embeds, seed=3, image=image, strength=0.5,
                                num_inference_steps=6, height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_inpaint_matches_diffusers(decoders, embeds, models_dir):
    decoder, mq = decoders["inpaint"]
    image = picture(2)
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[10:40, 20:50] = 1  # repaint
    latents = sampling.inpaint(decoder, *embeds, latents=movq.encode(mq, as_tensor(image)),
                               mask=torch.from_numpy(mask)[None], steps=5, seed=4)
    # The reference takes the very tensor MoVQ Encode makes: its PIL path rounds (x / 127.5 - 1, not x / 255 * 2 - 1)
    # and lays the pixels out otherwise, and the inpaint UNet's masked-image input amplifies such 1e-7 differences.
    expected = reference.decode(models_dir, "inpaint", *embeds, seed=4, image=as_tensor(image) * 2 - 1,
                                mask_image=torch.from_numpy(mask)[None].clone(), num_inference_steps=5,
                                height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_controlnet_matches_diffusers(decoders, embeds, models_dir):
    decoder, mq = decoders["controlnet"]
    hint = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    latents = sampling.txt2img(decoder, *embeds, latent_hw=(SIZE // 8, SIZE // 8), hint=hint, steps=5, seed=6)
    expected = reference.decode(models_dir, "controlnet", *embeds, seed=6, hint=hint, num_inference_steps=5,
                                height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_controlnet_img2img_matches_diffusers(decoders, embeds, models_dir):
    decoder, mq = decoders["controlnet"]
    image = picture(3)
    hint = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    latents = sampling.img2img(decoder, *embeds, latents=movq.encode(mq, as_tensor(image)), hint=hint,
                               strength=0.6, steps=5, seed=8)
    expected = reference.decode(models_dir, "controlnet_img2img", *embeds, seed=8, image=image, hint=hint,
                                strength=0.6, num_inference_steps=5, height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_mismatched_batches_are_a_clear_error(decoders):
    decoder, _ = decoders["text2img"]
    e = torch.zeros(2, tiny_models.EMBED)
    with pytest.raises(KandinskyError, match="batches differ.*latent has batch 3"):
        sampling.img2img(decoder, e, e, latents=torch.zeros(3, 4, 8, 8), steps=2, strength=1.0)
    with pytest.raises(KandinskyError, match="strength is 1.5"):
        sampling.img2img(decoder, e, e, latents=torch.zeros(2, 4, 8, 8), steps=2, strength=1.5)
