"""Kandinsky 2.2 on plain torch + diffusers + transformers, with no ComfyUI import.

Modules: ``loading`` (find and load model folders), ``prior`` (text -> CLIP image embeddings),
``sampling`` (the decoder's denoising loop), ``schedulers`` (scheduler choices), ``movq``
(latents <-> pixels) and ``errors``.
"""
from .errors import KandinskyError

__all__ = ["KandinskyError"]
