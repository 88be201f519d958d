"""``openclip``: an open_clip image-text model used as a semantic encoder.

- ``arch: tiny`` builds a small custom ViT + text transformer (CPU-trainable
  with ``tokzoo train clip``); any other ``arch`` is an open_clip model name
  (e.g. ``ViT-B-16-SigLIP``), with weights from a local ``pretrained`` file,
  which is required (``pretrained: random`` asks for a random network).
- ``checkpoint`` loads a model trained by tokzoo (a run folder of ``clip``).
- ``text: false`` drops the text tower after loading (a frozen image teacher
  needs none); ``text_tokenizer`` is a local folder of Hugging Face tokenizer
  files for archs whose text tokenizer lives on the Hub (SigLIP).

As an :class:`~tokzoo.api.Encoder`, images ``[B,3,H,W]`` in ``[0,1]`` map to
patch-token features ``[B, width, g, g]``. ``embed_image`` / ``embed_text``
give the pooled, projected embeddings for contrastive losses.
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import RANDOM, Encoder, checkpoint_config, load_checkpoint_weights, require_pretrained
from tokzoo.errors import ConfigError, WeightsNotFoundError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipEncoder(Encoder):
    def __init__(self, arch: str = "tiny", image_size: int = 32, patch_size: int = 4, width: int = 128,
                 layers: int = 4, head_width: int = 32, text_width: int = 128, text_layers: int = 2,
                 context_length: int = 32, embed_dim: int = 128, pool_type: str = "tok", stem: str = "patch",
                 pretrained: str = "", checkpoint: str = "", freeze: bool = False, text: bool = True,
                 text_tokenizer: str = ""):
        super().__init__()
        import open_clip
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

        self.arch, self.text_tokenizer = arch, text_tokenizer
        if arch == "tiny":
            if pretrained not in ("", RANDOM):
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
            path = None if checkpoint else require_pretrained(
                pretrained, what=f"open_clip '{arch}'", expected=f"the open_clip checkpoint of {arch} "
                "(e.g. open_clip_pytorch_model.bin)")
            with _quiet_root_logger():  # open_clip warns "No pretrained weights loaded": we know, and said so
                self.model = open_clip.create_model(arch, pretrained=str(path) if path else None)
            size = self.model.visual.image_size
            self.image_size = size[0] if isinstance(size, (tuple, list)) else size
            self.context_length = self.model.context_length
            self._tokenize = None  # made on first use: some archs' text tokenizers need local files
        visual = self.model.visual
        if self.trunk is not None:  # timm-backed towers (SigLIP)
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
            load_checkpoint_weights(self, checkpoint)
        self.has_text = text
        if not text:
            drop_text_tower(self.model)
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False).eval()

    @property
    def trunk(self) -> nn.Module | None:
        """The timm trunk of a timm-backed vision tower (SigLIP), else None.
        A property, so the trunk is registered once (under ``model.visual``)."""
        return getattr(self.model.visual, "trunk", None)

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
        if not self.has_text:
            raise ConfigError("openclip: this encoder was built with text=false and has no text tower")
        if self._tokenize is None:
            self._tokenize = self._load_text_tokenizer()
        ids = self._tokenize(list(texts)).to(self.mean.device)
        return self.model.encode_text(ids)


    def _load_text_tokenizer(self):
        import open_clip

        cfg = open_clip.get_model_config(self.arch) or {}
        text_cfg = cfg.get("text_cfg", {})
        hf_name = text_cfg.get("hf_tokenizer_name")
        try:
            if self.text_tokenizer:
                if not hf_name:
                    raise ConfigError(f"openclip: '{self.arch}' uses open_clip's built-in tokenizer; "
                                      "text_tokenizer is only for archs with a Hugging Face tokenizer")
                if not Path(self.text_tokenizer).expanduser().is_dir():
                    raise WeightsNotFoundError(f"openclip text_tokenizer: {self.text_tokenizer} is not a folder")
                from open_clip.tokenizer import HFTokenizer

                return HFTokenizer(str(Path(self.text_tokenizer).expanduser()), context_length=self.context_length,
                                   **text_cfg.get("tokenizer_kwargs", {}))
            return open_clip.get_tokenizer(self.arch)
        except (ConfigError, WeightsNotFoundError):
            raise
        except ImportError as exc:
            raise ConfigError(f"the text tokenizer of open_clip '{self.arch}' needs the package '{exc.name}': "
                              "pip install 'tokzoo-baselines[siglip]'") from None
        except Exception as exc:
            raise WeightsNotFoundError(
                f"the text tokenizer of open_clip '{self.arch}' ({hf_name or 'built in'}) could not be loaded offline "
                f"({str(exc).splitlines()[0]}); put its files in a folder and set the encoder's text_tokenizer=FOLDER "
                "(e.g. model.tower.text_tokenizer=...), or into the Hugging Face cache (HF_HOME)") from None


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def drop_text_tower(model: nn.Module) -> None:
    """Remove an open_clip model's text tower in place (image features only)."""
    if hasattr(model, "text") and isinstance(model.text, nn.Module):  # CustomTextCLIP (SigLIP)
        model.text = None
        return
    for name in ("transformer", "token_embedding", "ln_final"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, None)
    for name in ("positional_embedding", "text_projection"):
        if name in model._parameters:
            model._parameters[name] = None
        elif isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, None)
    if "attn_mask" in model._buffers:
        model._buffers["attn_mask"] = None


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
        saved = checkpoint_config(ckpt)["model"]
        if saved.get("name") != "openclip":
            raise ConfigError(f"openclip: {ckpt} is a '{saved.get('name')}' checkpoint, not an openclip model")
        arch = {k: v for k, v in saved.items() if k not in ("name", "checkpoint", "freeze", "pretrained", "text",
                                                             "text_tokenizer")}
        arch.update({k: params[k] for k in ("checkpoint", "freeze", "text", "text_tokenizer") if k in params})
        return OpenClipEncoder(**arch)
    return OpenClipEncoder(**params)


def openclip_schema():
    """``openclip``'s parameters: :class:`OpenClipEncoder`'s own signature (its factory takes ``**params``)."""
    from tokzoo.schema import schema_of

    return schema_of(OpenClipEncoder, "openclip")
