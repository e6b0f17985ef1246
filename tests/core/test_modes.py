"""Every decoder mode of kandinsky_core against its diffusers pipeline on the same tiny weights and seeds."""
import numpy as np
import pytest
import torch
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import prepare_mask
from PIL import Image

import reference
import tiny_models
from helpers import SIZE, as_tensor, picture
from kandinsky_core import KandinskyError, loading, movq, sampling


@pytest.fixture(scope="module")
def decoders(models_dir):
    return {kind: loading.load_decoder(models_dir / tiny_models.NAMES[kind], channels_last=True)
            for kind in loading.DECODER_KINDS}


@pytest.fixture(scope="module")
def embeds(models_dir):
    return reference.prior(models_dir, "a red cat", "low quality", steps=3, seed=11)


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
    expected = reference.decoder_pipeline(models_dir, "img2img", *embeds, seed=3, image=image, strength=0.5,
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
    expected = reference.decoder_pipeline(models_dir, "inpaint", *embeds, seed=4, image=as_tensor(image) * 2 - 1,
                                          mask_image=torch.from_numpy(mask)[None].clone(), num_inference_steps=5,
                                          height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_controlnet_matches_diffusers(decoders, embeds, models_dir):
    decoder, mq = decoders["controlnet"]
    hint = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    latents = sampling.txt2img(decoder, *embeds, height=SIZE, width=SIZE, hint=hint, steps=5, seed=6)
    expected = reference.decoder_pipeline(models_dir, "controlnet", *embeds, seed=6, hint=hint, num_inference_steps=5,
                                          height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_controlnet_img2img_matches_diffusers(decoders, embeds, models_dir):
    decoder, mq = decoders["controlnet"]
    image = picture(3)
    hint = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    latents = sampling.img2img(decoder, *embeds, latents=movq.encode(mq, as_tensor(image)), hint=hint,
                               strength=0.6, steps=5, seed=8)
    expected = reference.decoder_pipeline(models_dir, "controlnet_img2img", *embeds, seed=8, image=image, hint=hint,
                                          strength=0.6, num_inference_steps=5, height=SIZE, width=SIZE)
    assert reference.max_diff(pixels(mq, latents), expected) <= 1e-4


def test_mismatched_batches_are_a_clear_error(decoders):
    decoder, _ = decoders["text2img"]
    e = torch.zeros(2, tiny_models.EMBED)
    with pytest.raises(KandinskyError, match="batches differ.*latent has batch 3"):
        sampling.img2img(decoder, e, e, latents=torch.zeros(3, 4, 8, 8), steps=2, strength=1.0)
    with pytest.raises(KandinskyError, match="strength is 1.5"):
        sampling.img2img(decoder, e, e, latents=torch.zeros(2, 4, 8, 8), steps=2, strength=1.5)


# Batches and non-square sizes, where the reference is wrong (img2img swaps width and height; inpaint blends only
# the first image): a batch run against per-image reference runs. DDIM with eta 0 draws no noise per step, and
# each reference run gets its slice of the batch's starting noise, since no single-image draw equals a batch item.

def batch_noise(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def ddim(models_dir, mode):
    pipe = reference.pipeline(models_dir, mode)
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(pipe.scheduler.config)


def test_img2img_batch_of_non_square_pictures(decoders, embeds, models_dir, monkeypatch):
    import diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_img2img as img2img_module

    decoder, mq = decoders["text2img"]
    rng = np.random.default_rng(9)
    images = [Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)) for _ in range(2)]
    latents = movq.encode(mq, torch.cat([as_tensor(i) for i in images]))
    got = pixels(mq, sampling.img2img(decoder, *embeds, latents=latents, strength=0.6, steps=5, seed=12,
                                      scheduler="ddim"))
    noise = batch_noise(12, latents.shape)
    pipe = reference.pipeline(models_dir, "img2img")
    monkeypatch.setattr(pipe, "scheduler", ddim(models_dir, "img2img"))
    for k, image in enumerate(images):
        monkeypatch.setattr(img2img_module, "randn_tensor", lambda *a, k=k, **kw: noise[k:k + 1])
        # The reference hands (width, height) to a (height, width) resize: swap them so it keeps the size.
        expected = pipe(image_embeds=embeds[0], negative_image_embeds=embeds[1], image=image, strength=0.6,
                        num_inference_steps=5, height=128, width=64, output_type="np").images
        assert reference.max_diff(got[k:k + 1], expected) <= 1e-4


def test_inpaint_batch_blends_every_image_with_its_own_original(decoders, embeds, models_dir, monkeypatch):
    decoder, mq = decoders["inpaint"]
    images = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(3))
    masks = torch.zeros(2, 64, 128)
    masks[0, 8:40, 10:60] = 1
    masks[1, 20:64, 70:128] = 1
    # Compared as latents, the decoder node's output: a batched UNet call differs from a single one in the last
    # float bits (1e-7), which this tiny random inpaint UNet amplifies to 1e-4 in the latents and 4e-4 in pixels.
    got = sampling.inpaint(decoder, *embeds, latents=movq.encode(mq, images), mask=masks, steps=5, seed=13,
                           scheduler="ddim")
    noise = batch_noise(13, (2, 4, 8, 16))
    pipe = reference.pipeline(models_dir, "inpaint")
    monkeypatch.setattr(pipe, "scheduler", ddim(models_dir, "inpaint"))
    for k in range(2):
        expected = pipe(image_embeds=embeds[0], negative_image_embeds=embeds[1], image=images[k:k + 1] * 2 - 1,
                        mask_image=masks[k:k + 1].clone(), latents=noise[k:k + 1], num_inference_steps=5,
                        height=64, width=128, output_type="latent").images
        assert reference.max_diff(got[k:k + 1], expected) <= 1e-4


def test_one_mask_serves_a_batch(decoders, embeds):
    decoder, mq = decoders["inpaint"]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 32, 32)  # half the pixel size: resized
    mask[:, 8:20, 8:20] = 1
    shared = sampling.inpaint(decoder, *embeds, latents=movq.encode(mq, images), mask=mask, steps=2, seed=1)
    each = sampling.inpaint(decoder, *embeds, latents=movq.encode(mq, images), mask=mask.expand(2, -1, -1), steps=2,
                            seed=1)
    assert shared.shape == (2, 4, 8, 8) and torch.equal(shared, each)  # the same arithmetic on each element


def test_inpaint_noises_the_kept_area_to_the_schedulers_level(decoders, embeds):
    """Between steps the kept area is the original noised to the next step's sigma, for Euler too (whose
    init_noise_sigma, 6.7 at 4 steps and 19 at 20, the reference applies once more)."""
    decoder, mq = decoders["inpaint"]
    image = movq.encode(mq, as_tensor(picture(5)))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :16, :16] = 1  # repaint a corner: latent cells from 4 on are kept
    seen = []
    sampling.inpaint(decoder, *embeds, latents=image, mask=mask, steps=4, seed=2, scheduler="euler",
                     callback=lambda i, n, latents: seen.append(latents.clone()))
    sched = sampling.make_scheduler("euler", decoder.scheduler_config)
    sched.set_timesteps(4)
    for i in range(3):
        level = (seen[i] - image)[..., 4:, 4:].std() / sched.sigmas[i + 1]
        assert 0.7 < level < 1.4, (i, float(level))
