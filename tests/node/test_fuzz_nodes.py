"""Fuzzing the node entry points that take tensors: every odd shape either runs or raises the package's own clear
error, never anything from deep inside torch."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tiny_models
from helpers import FUZZ, runs_or_clear


@pytest.fixture(scope="module")
def node_models(run_node):
    """(movq, prior, depth model) as the loader nodes give them."""
    return (run_node("Kandinsky22DecoderLoader", model=tiny_models.NAMES["text2img"], dtype="auto")[1],
            run_node("Kandinsky22PriorLoader", model=tiny_models.NAMES["prior"], dtype="auto")[0],
            run_node("Kandinsky22DepthLoader", model=tiny_models.DEPTH_NAME)[0])


@FUZZ
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=5), node=st.sampled_from(
    ["Kandinsky22MoVQEncode", "Kandinsky22ImageEncode", "Kandinsky22DepthHint", "Kandinsky22MoVQDecode"]))
def test_node_entry_points_with_odd_tensors(comfy, run_node, node_models, shape, node):
    mq, prior_bundle, depth_model = node_models
    tensor = torch.rand(*shape)
    inputs = {"Kandinsky22MoVQEncode": dict(movq=mq, image=tensor),
              "Kandinsky22ImageEncode": dict(prior=prior_bundle, image=tensor),
              "Kandinsky22DepthHint": dict(depth_model=depth_model, image=tensor),
              "Kandinsky22MoVQDecode": dict(movq=mq, latent={"samples": tensor})}[node]
    runs_or_clear(run_node, node, error=comfy.kandinsky_core.KandinskyError, **inputs)  # the package's own copy
