"""The frozen semantic teacher: patch features from a pretrained image encoder.

``source: openclip`` wraps tokzoo's ``openclip`` encoder (a named open_clip
arch such as SigLIP with weights from a local file, or the tiny teacher from
``tokzoo train clip`` via ``checkpoint``). ``source: timm`` builds a timm
ViT and loads its weights from a local ``.safetensors`` / ``.pth`` file.
Either way the teacher is frozen and in eval mode: images ``[B,3,H,W]`` in
``[0,1]`` -> features ``[B,C,g,g]``.

The teacher is pretrained by definition: without ``checkpoint`` or
``pretrained`` it refuses to be built, naming the parameter to set;
``pretrained: random`` asks for a deliberately random teacher (recorded and
flagged in bench tables). Its weights are a frozen part of SemHiTok, stored
once per run folder; the text tower of an open_clip teacher is dropped.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from tokzoo.api import RANDOM, Encoder, current_spec_path, is_restoring, require_pretrained
from tokzoo.errors import ConfigError, WeightsNotFoundError
from tokzoo.registry import build


class SemanticTeacher(Encoder):
    def __init__(self, source: str = "openclip", arch: str = "tiny", checkpoint: str = "", pretrained: str = "",
                 image_size: int = 0):
        """``source``: openclip | timm; ``arch``: open_clip arch or timm model name;
        ``checkpoint``: a tokzoo run of ``clip`` (openclip); ``pretrained``: a local
        weights file, or ``random``; ``image_size``: timm input size (0: its default)."""
        super().__init__()
        self.source = source
        if source == "openclip":
            if not checkpoint and arch == "tiny" and pretrained != RANDOM and not is_restoring():
                where = current_spec_path()
                raise WeightsNotFoundError(
                    f"the semantic teacher is a pretrained network, and none was given: set {where}.checkpoint=RUN "
                    f"(a run of `tokzoo train clip`, e.g. runs/clip), or {where}.arch=NAME with {where}.pretrained="
                    f"FILE (a local open_clip checkpoint). To use a deliberately random teacher, set "
                    f"{where}.pretrained={RANDOM} (recorded, and flagged in bench tables).")
            spec = {"name": "openclip", "freeze": True, "text": False}
            if checkpoint:
                spec["checkpoint"] = checkpoint
            else:
                spec.update(arch=arch, pretrained=pretrained)
            self.net = build("encoder", spec)
            self.out_channels, self.downsample, self.grid = self.net.out_channels, self.net.downsample, self.net.grid
            self.image_size = self.net.image_size
        elif source == "timm":
            import timm

            kwargs = {"img_size": image_size} if image_size else {}
            try:
                self.net = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
            except RuntimeError as exc:
                raise ConfigError(f"semantic teacher: unknown timm model '{arch}' ({exc})") from None
            path = require_pretrained(pretrained, what=f"the semantic teacher (timm '{arch}')",
                                      expected=f"timm '{arch}' weights (.safetensors or .pth)")
            if path is not None:
                if path.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    state = load_file(str(path))
                else:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                missing, unexpected = self.net.load_state_dict(state, strict=False)
                if missing:
                    raise ConfigError(f"{path} does not fit timm '{arch}': {len(missing)} missing keys "
                                      f"(e.g. {missing[0]})")
            grid = self.net.patch_embed.grid_size
            self.grid = grid[0]
            self.image_size = self.net.patch_embed.img_size[0]
            self.out_channels = self.net.num_features
            self.downsample = self.image_size // self.grid
            cfg = self.net.pretrained_cfg or {}
            self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(cfg.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1), persistent=False)
        else:
            raise ConfigError(f"semantic teacher: source must be 'openclip' or 'timm', not '{source}'")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.source == "openclip":
            return self.net(images)
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        tokens = self.net.forward_features((images - self.mean) / self.std)
        tokens = tokens[:, getattr(self.net, "num_prefix_tokens", 0):]
        B, N, C = tokens.shape
        return tokens.transpose(1, 2).reshape(B, C, self.grid, self.grid)
