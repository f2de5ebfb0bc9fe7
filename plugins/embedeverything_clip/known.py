"""What the CLIP plugin knows without importing open_clip (which imports torch).

``ARCH_DIMS``: the embedding width of the architectures we support, so that ``ee encoders`` can state
``dim`` for free; a test checks every entry against open_clip's own model config JSON.
``TAGS``: for the pretrained tags we support, where ``ee weights fetch`` gets the file and the reference
hash that ``ee weights verify`` compares with. open_clip's release files carry the first 8 hex digits of
their SHA-256 in the name (like torch.hub's), and that is their reference; no reference ships for files
served only by the Hugging Face hub, so those report "unverified" instead of "ok".
Other tags of open_clip's registry still load (through open_clip, online, or from a local checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

ARCH_DIMS: dict[str, int] = {
    "RN50": 1024,
    "RN101": 512,
    "RN50x4": 640,
    "RN50x16": 768,
    "RN50x64": 1024,
    "ViT-B-32": 512,
    "ViT-B-32-quickgelu": 512,
    "ViT-B-16": 512,
    "ViT-B-16-quickgelu": 512,
    "ViT-L-14": 768,
    "ViT-L-14-quickgelu": 768,
    "ViT-L-14-336": 768,
    "ViT-H-14": 1024,
    "ViT-g-14": 1024,
    "ViT-bigG-14": 1280,
}


@dataclass(frozen=True)
class Tag:
    """One pretrained tag: where its file comes from and what it must hash to."""

    hf_hub: str = ""  # "org/repo" on the Hugging Face hub (open_clip's preferred source)
    url: str = ""  # open_clip's release URL (a state dict), used when it carries a hash
    sha256_prefix: str | None = None  # from the release file's name
    sha256: str | None = None  # full digest, where established


_GH = "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/"

TAGS: dict[tuple[str, str], Tag] = {
    ("ViT-B-32", "openai"): Tag(hf_hub="timm/vit_base_patch32_clip_224.openai"),
    ("ViT-B-32", "laion400m_e32"): Tag(
        hf_hub="timm/vit_base_patch32_clip_224.laion400m_e32",
        url=_GH + "vit_b_32-quickgelu-laion400m_e32-46683a32.pt",
        sha256_prefix="46683a32",
    ),
    ("ViT-B-32", "laion2b_e16"): Tag(
        hf_hub="timm/vit_base_patch32_clip_224.laion2b_e16",
        url=_GH + "vit_b_32-laion2b_e16-af8dbd0c.pth",
        sha256_prefix="af8dbd0c",
    ),
    ("ViT-B-32", "laion2b_s34b_b79k"): Tag(hf_hub="laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): Tag(hf_hub="laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"),
    ("ViT-B-16", "openai"): Tag(hf_hub="timm/vit_base_patch16_clip_224.openai"),
    ("ViT-B-16", "laion400m_e32"): Tag(
        hf_hub="timm/vit_base_patch16_clip_224.laion400m_e32",
        url=_GH + "vit_b_16-laion400m_e32-55e67d44.pt",
        sha256_prefix="55e67d44",
    ),
    ("ViT-B-16", "laion2b_s34b_b88k"): Tag(hf_hub="laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): Tag(hf_hub="laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K"),
    ("ViT-L-14", "openai"): Tag(hf_hub="timm/vit_large_patch14_clip_224.openai"),
    ("ViT-L-14", "laion400m_e32"): Tag(
        hf_hub="timm/vit_large_patch14_clip_224.laion400m_e32",
        url=_GH + "vit_l_14-laion400m_e32-3d133497.pt",
        sha256_prefix="3d133497",
    ),
    ("ViT-L-14", "laion2b_s32b_b82k"): Tag(hf_hub="laion/CLIP-ViT-L-14-laion2B-s32B-b82K"),
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): Tag(hf_hub="laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"),
    ("RN50", "openai"): Tag(hf_hub="timm/resnet50_clip.openai"),
    ("RN50", "yfcc15m"): Tag(
        hf_hub="timm/resnet50_clip.yfcc15m",
        url=_GH + "rn50-quickgelu-yfcc15m-455df137.pt",
        sha256_prefix="455df137",
    ),
    ("RN50", "cc12m"): Tag(
        hf_hub="timm/resnet50_clip.cc12m",
        url=_GH + "rn50-quickgelu-cc12m-f000538c.pt",
        sha256_prefix="f000538c",
    ),
}

#: the file open_clip tries first in a hub repo (safetensors: no pickle)
HF_FILENAME = "open_clip_model.safetensors"
HF_FALLBACK_FILENAME = "open_clip_pytorch_model.bin"
