"""Depth nodes: a picture -> a ControlNet depth hint (IMAGE)."""
from ..kandinsky_core import depth
from . import comfy_bridge as bridge
from . import inputs


class Kandinsky22DepthHint(bridge.KandinskyNode):
    CATEGORY = f"{bridge.CATEGORY}/depth"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("hint",)
    OUTPUT_TOOLTIPS = ("The depth map (white = near) as a picture, for the ControlNet decoder nodes' hint.",)
    DESCRIPTION = ("Estimates a picture's depth (white = near) as the hint for the ControlNet decoders, built as "
                   "the Kandinsky 2.2 documentation builds it. Any other depth map IMAGE works as a hint too.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth_model": ("K22_DEPTH_MODEL", {"tooltip": "From Kandinsky 2.2 Depth Loader."}),
            "image": inputs.image("The picture whose depth guides the decoder."),
        }}

    def run(self, depth_model, image):
        pictures = bridge.image_to_bchw(image)  # checked before the depth model loads
        with bridge.loaded(depth_model.model) as dev:
            return (bridge.bchw_to_image(depth.make_hint(depth_model, pictures, dev)),)
