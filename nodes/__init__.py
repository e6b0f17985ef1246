"""ComfyUI adapters: each node converts ComfyUI types, makes one call into kandinsky_core, converts back."""
from pathlib import Path

from .comfy_bridge import provide_pictures
from .decoder import (Kandinsky22ControlNet, Kandinsky22ControlNetImg2Img, Kandinsky22Img2Img, Kandinsky22Inpaint,
                      Kandinsky22Txt2Img)
from .depth import Kandinsky22DepthHint
from .embeds import Kandinsky22CLIPVisionEmbeds, Kandinsky22EmbedsMix
from .loaders import Kandinsky22DecoderLoader, Kandinsky22DepthLoader, Kandinsky22PriorLoader
from .movq import Kandinsky22MoVQDecode, Kandinsky22MoVQEncode
from .native import Kandinsky22Conditioning
from .prior import Kandinsky22ImageEncode, Kandinsky22PriorEmb2Emb, Kandinsky22PriorEncode

_NODES = {
    Kandinsky22PriorLoader: "Kandinsky 2.2 Prior Loader",
    Kandinsky22DecoderLoader: "Kandinsky 2.2 Decoder Loader",
    Kandinsky22DepthLoader: "Kandinsky 2.2 Depth Loader",
    Kandinsky22PriorEncode: "Kandinsky 2.2 Prior Encode",
    Kandinsky22PriorEmb2Emb: "Kandinsky 2.2 Prior Emb2Emb",
    Kandinsky22ImageEncode: "Kandinsky 2.2 Image Encode",
    Kandinsky22EmbedsMix: "Kandinsky 2.2 Embeds Mix",
    Kandinsky22CLIPVisionEmbeds: "Kandinsky 2.2 CLIP Vision Embeds",
    Kandinsky22DepthHint: "Kandinsky 2.2 Depth Hint",
    Kandinsky22Txt2Img: "Kandinsky 2.2 Text to Image",
    Kandinsky22Img2Img: "Kandinsky 2.2 Image to Image",
    Kandinsky22Inpaint: "Kandinsky 2.2 Inpaint",
    Kandinsky22ControlNet: "Kandinsky 2.2 ControlNet",
    Kandinsky22ControlNetImg2Img: "Kandinsky 2.2 ControlNet Image to Image",
    Kandinsky22MoVQEncode: "Kandinsky 2.2 MoVQ Encode",
    Kandinsky22MoVQDecode: "Kandinsky 2.2 MoVQ Decode",
    Kandinsky22Conditioning: "Kandinsky 2.2 Conditioning",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in _NODES.items()}

provide_pictures(sorted((Path(__file__).resolve().parent.parent / "workflows" / "input").glob("*.png")))
