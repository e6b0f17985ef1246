"""Kandinsky 2.2 on plain torch + diffusers + transformers, with no ComfyUI import.

Modules: ``loading`` (find, recognise and load model folders), ``prior`` (text and pictures -> CLIP image
embeddings), ``embeds`` (blends), ``sampling`` (the decoder's denoising runs), ``schedulers`` (scheduler choices and
what both stages' runs share), ``movq`` (the latent grid, latents <-> pixels), ``depth``
(ControlNet hints) and ``errors``.
"""
from .errors import KandinskyError

__all__ = ["KandinskyError"]
