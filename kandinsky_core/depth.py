"""Depth hints for the ControlNet decoder, built as the reference's make_hint builds them."""
from __future__ import annotations

import numpy as np
import torch

from .loading import DepthBundle
from .prior import to_uint8_pictures


@torch.no_grad()
def make_hint(bundle: DepthBundle, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pictures [B, 3, H, W] in 0..1 -> hints [B, 3, H, W]: the depth map, min-max scaled to uint8 as
    transformers' depth-estimation pipeline does, in 3 equal channels in 0..1 at the picture's size."""
    model, processor = bundle.model, bundle.processor
    hints = []
    for picture in to_uint8_pictures(images):  # one at a time, as the pipeline runs them
        inputs = processor(images=picture, return_tensors="pt").to(device=device, dtype=model.dtype)
        output = model(**inputs)
        depth = processor.post_process_depth_estimation(output, target_sizes=[picture.size[::-1]])[0]
        depth = depth["predicted_depth"].float().cpu().numpy()
        depth = (depth - depth.min()) / max(depth.max() - depth.min(), 1e-12)  # a flat map stays finite: all 0
        hints.append(torch.from_numpy((depth * 255).astype("uint8").astype(np.float32) / 255.0))
    return torch.stack(hints)[:, None].expand(-1, 3, -1, -1).contiguous()
