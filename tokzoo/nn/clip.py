"""``openclip``: an open_clip image-text model used as a semantic encoder.

- ``arch: tiny`` builds a small custom ViT + text transformer (CPU-trainable
  with ``tokzoo train clip``); any other ``arch`` is an open_clip model name
  (e.g. ``ViT-B-16-SigLIP``), with weights from a local ``pretrained`` file.
- ``checkpoint`` loads a model trained by tokzoo (a run folder of ``clip``).

As an :class:`~tokzoo.api.Encoder`, images ``[B,3,H,W]`` in ``[0,1]`` map to
patch-token features ``[B, width, g, g]``. ``embed_image`` / ``embed_text``
give the pooled, projected embeddings for contrastive losses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import Encoder
from tokzoo.errors import ConfigError, WeightsNotFoundError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class OpenClipConfig:
    arch: str = "tiny"
    image_size: int = 32
    patch_size: int = 4
    width: int = 128
    layers: int = 4
    head_width: int = 32
    text_width: int = 128
    text_layers: int = 2
    context_length: int = 32
    embed_dim: int = 128
    pool_type: str = "tok"  # tiny arch: "tok" (class token) or "avg" (mean of patch tokens)
    stem: str = "patch"  # tiny arch: "patch" (ViT patchify) or "conv" (a small stride-`patch_size` conv stem)
    pretrained: str = ""  # local open_clip weights file (for a named arch)
    checkpoint: str = ""  # a tokzoo run folder / checkpoint of a trained `openclip` encoder
    freeze: bool = False


class OpenClipEncoder(Encoder):
    def __init__(self, arch: str = "tiny", image_size: int = 32, patch_size: int = 4, width: int = 128,
                 layers: int = 4, head_width: int = 32, text_width: int = 128, text_layers: int = 2,
                 context_length: int = 32, embed_dim: int = 128, pool_type: str = "tok", stem: str = "patch",
                 pretrained: str = "", checkpoint: str = "",
                 freeze: bool = False):
        super().__init__()
        import open_clip
        self.arch = arch
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

        if arch == "tiny":
            if pretrained:
                raise ConfigError("openclip: 'pretrained' needs a named open_clip arch; for arch=tiny use 'checkpoint'")
            self.model = CLIP(embed_dim, CLIPVisionCfg(layers=layers, width=width, head_width=head_width,
                                                      patch_size=patch_size, image_size=image_size,
                                                      pool_type=pool_type),
                              CLIPTextCfg(context_length=context_length, width=text_width, heads=max(1, text_width // 32),
                                          layers=text_layers))
            if stem == "conv":
                self.model.visual.conv1 = conv_stem(width, patch_size)
            elif stem != "patch":
                raise ConfigError(f"openclip: stem must be 'patch' or 'conv', not '{stem}'")
            self.image_size, self.context_length = image_size, context_length
            self._tokenize = lambda texts: open_clip.tokenize(texts, context_length=context_length)
        else:
            if arch not in open_clip.list_models():
                raise ConfigError(f"openclip: unknown open_clip arch '{arch}' (see open_clip.list_models())")
            if pretrained and not Path(pretrained).expanduser().is_file():
                raise WeightsNotFoundError(f"openclip '{arch}' needs its weights file {pretrained}, which does not "
                                           "exist. Put the open_clip checkpoint (e.g. open_clip_pytorch_model.bin) there.")
            self.model = open_clip.create_model(arch, pretrained=str(Path(pretrained).expanduser()) if pretrained else None)
            size = self.model.visual.image_size
            self.image_size = size[0] if isinstance(size, (tuple, list)) else size
            self.context_length = self.model.context_length
            self._tokenize = None  # made on first use: some archs' text tokenizers need local files
        visual = self.model.visual
        self.trunk = getattr(visual, "trunk", None)  # timm-backed towers (SigLIP)
        if self.trunk is not None:
            grid = self.trunk.patch_embed.grid_size
            self.out_channels = self.trunk.num_features
        else:
            visual.output_tokens = True
            grid = visual.grid_size
            self.out_channels = visual.transformer.width
        self.grid = grid[0] if isinstance(grid, (tuple, list)) else grid
        self.downsample = self.image_size // self.grid
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        if checkpoint:
            from tokzoo.train.checkpoint import load_weights, resolve_checkpoint

            load_weights(self, resolve_checkpoint(checkpoint) / "model.safetensors")
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(mode and not getattr(self, "frozen", False))

    def _prep(self, images: Tensor) -> Tensor:
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        return (images - self.mean) / self.std

    def tokens(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled projected embedding ``[B,D]``, patch tokens ``[B,N,width]``)."""
        x = self._prep(images)
        if self.trunk is not None:
            tokens = self.trunk.forward_features(x)
            pooled = self.model.visual.head(self.trunk.forward_head(tokens)) if hasattr(self.model.visual, "head") \
                else self.model.visual(x)
            return pooled, tokens[:, getattr(self.trunk, "num_prefix_tokens", 0):]
        return self.model.visual(x)

    def forward(self, images: Tensor, texts: list[str] | None = None):
        """Images -> patch features ``[B,width,g,g]``; with ``texts``, instead
        ``(image_embedding, text_embedding, logit_scale)`` for a contrastive loss."""
        pooled, tokens = self.tokens(images)
        if texts is not None:
            return pooled, self.embed_text(texts), self.model.logit_scale.exp()
        B, N, C = tokens.shape
        return tokens.transpose(1, 2).reshape(B, C, self.grid, self.grid)

    def embed_image(self, images: Tensor) -> Tensor:
        return self.tokens(images)[0]

    def embed_text(self, texts: list[str]) -> Tensor:
        if self._tokenize is None:
            import open_clip

            try:
                self._tokenize = open_clip.get_tokenizer(self.arch)
            except Exception as exc:
                raise WeightsNotFoundError(f"the text tokenizer of open_clip '{self.arch}' could not be loaded offline "
                                           f"({str(exc).splitlines()[0]}); put its files in the Hugging Face cache "
                                           "(HF_HOME) first") from None
        ids = self._tokenize(list(texts)).to(self.mean.device)
        return self.model.encode_text(ids)


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """A convolutional stem in place of the ViT's patchify layer, same output grid.

    Stride-2 3x3 conv + BatchNorm + ReLU layers (log2(patch_size) of them), then
    a 1x1 projection to the transformer width: Xiao et al. 2021, "Early
    convolutions help transformers see better" - a ViT trained from scratch on
    little data learns spatial structure much faster with it.
    """
    n = max(1, int(math.log2(patch_size)))
    if 2 ** n != patch_size:
        raise ConfigError(f"openclip: stem=conv needs a power-of-two patch_size, not {patch_size}")
    layers: list[nn.Module] = []
    c_in = 3
    for k in range(n):
        c_out = max(16, width // 2 ** (n - k))
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, width, 1))
    return nn.Sequential(*layers)


def build_openclip(**params) -> OpenClipEncoder:
    """An open_clip model; ``checkpoint`` takes its architecture from the checkpoint's config."""
    ckpt = params.get("checkpoint")
    if ckpt:
        from tokzoo.train.checkpoint import read_config, resolve_checkpoint

        saved = read_config(resolve_checkpoint(ckpt))["model"]
        if saved.get("name") != "openclip":
            raise ConfigError(f"openclip: {ckpt} is a '{saved.get('name')}' checkpoint, not an openclip model")
        arch = {k: v for k, v in saved.items() if k not in ("name", "checkpoint", "freeze", "pretrained")}
        arch.update({"checkpoint": ckpt, "freeze": params.get("freeze", False)})
        return OpenClipEncoder(**arch)
    return OpenClipEncoder(**params)
