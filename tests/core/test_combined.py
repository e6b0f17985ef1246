"""diffusers' combined pipelines (prior, decoder and MoVQ in one call) are the prior and a decoder drawing from one
generator: the decoder goes on where the prior left it, as the blueprints' nodes do through the prior's noise."""
import numpy as np
import pytest
import torch

import reference
import tiny_models
from helpers import SIZE, as_tensor, picture
from kandinsky_core import KandinskyError, loading, movq, prior, sampling
from kandinsky_core.schedulers import generator, resumed

PROMPT, NEGATIVE = "a red cat", "low quality"
SETTINGS = dict(num_inference_steps=4, guidance_scale=4.0, prior_num_inference_steps=3, prior_guidance_scale=4.0,
                height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def bundles(models_dir):
    return (loading.load_prior(models_dir / tiny_models.NAMES["prior"]),
            {kind: loading.load_decoder(models_dir / tiny_models.NAMES[kind], channels_last=True)
             for kind in ("text2img", "inpaint")})


def mask() -> torch.Tensor:
    m = torch.zeros(1, SIZE, SIZE)
    m[:, 8:40, 16:56] = 1  # repaint
    return m


@pytest.mark.parametrize("mode", ["text2img", "img2img", "inpaint"])
@pytest.mark.parametrize("handed_on", ["generator", "state"])
def test_prior_then_decoder_on_one_generator_is_the_combined_pipeline(bundles, models_dir, mode, handed_on):
    prior_bundle, decoders = bundles
    decoder, mq = decoders["inpaint" if mode == "inpaint" else "text2img"]
    rng = generator(7)
    embeds = prior.text_to_embeds(prior_bundle, PROMPT, NEGATIVE, steps=3, seed=rng)
    rng = resumed(rng.get_state()) if handed_on == "state" else rng  # what travels between the nodes: the state
    common = dict(steps=4, guidance_scale=4.0, seed=rng)
    image = picture(3)
    if mode == "text2img":
        latents = sampling.txt2img(decoder, *embeds, height=SIZE, width=SIZE, **common)
        extra = {}
    elif mode == "img2img":
        latents = sampling.img2img(decoder, *embeds, latents=movq.encode(mq, as_tensor(image)), strength=0.3, **common)
        extra = dict(image=image, strength=0.3)
    else:
        latents = sampling.inpaint(decoder, *embeds, latents=movq.encode(mq, as_tensor(image)), mask=mask(), **common)
        # The tensors MoVQ Encode and the node take (see test_modes: the PIL path rounds otherwise).
        extra = dict(image=as_tensor(image) * 2 - 1, mask_image=mask().clone())
    expected = reference.combined(models_dir, mode, PROMPT, seed=7, negative_prompt=NEGATIVE, **SETTINGS, **extra)
    got = movq.decode(mq, latents).permute(0, 2, 3, 1)
    assert reference.max_diff(got, expected) <= 1e-4
    # and it is not the decoder on a fresh generator of the same seed
    fresh = sampling.txt2img(decoder, *embeds, height=SIZE, width=SIZE, steps=4, guidance_scale=4.0, seed=7) \
        if mode == "text2img" else None
    if fresh is not None:
        assert reference.max_diff(movq.decode(mq, fresh).permute(0, 2, 3, 1), expected) > 1e-2


@pytest.mark.parametrize("state", [None, torch.zeros(3, dtype=torch.uint8), torch.zeros(5056)])
def test_a_bad_state_is_a_clear_error(state):
    with pytest.raises(KandinskyError, match="noise output of a Kandinsky 2.2 prior node") as err:
        resumed(state)
    assert err.value.about == "noise"


def test_a_resumed_generator_draws_what_the_original_would():
    rng = generator(5)
    torch.randn(100, generator=rng)
    state = rng.get_state()
    a = torch.randn(50, generator=rng)
    b = torch.randn(50, generator=resumed(state))
    assert torch.equal(a, b)  # the same generator state gives the same draws, bit for bit
    assert not np.array_equal(a, torch.randn(50, generator=generator(5)))
