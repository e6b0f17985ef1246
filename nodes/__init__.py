"""ComfyUI adapters: each node converts ComfyUI types, makes one call into kandinsky_core, converts back."""
from .decode import Kandinsky22Txt2Img
from .loaders import Kandinsky22DecoderLoader, Kandinsky22PriorLoader
from .movq import Kandinsky22MoVQDecode, Kandinsky22MoVQEncode
from .prior import Kandinsky22PriorEncode

_NODES = {
    Kandinsky22PriorLoader: "Kandinsky 2.2 Prior Loader",
    Kandinsky22DecoderLoader: "Kandinsky 2.2 Decoder Loader",
    Kandinsky22PriorEncode: "Kandinsky 2.2 Prior Encode",
    Kandinsky22Txt2Img: "Kandinsky 2.2 Text to Image",
    Kandinsky22MoVQEncode: "Kandinsky 2.2 MoVQ Encode",
    Kandinsky22MoVQDecode: "Kandinsky 2.2 MoVQ Decode",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in _NODES.items()}
