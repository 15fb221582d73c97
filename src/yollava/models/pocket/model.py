"""PocketVLM: EfficientNet-Lite0 feature map -> 10 visual tokens -> MLP projector -> Qwen2.5-0.5B.

    photo (224 px) -> (1280, 7, 7) -> adaptive-avg-pool to G x G (+ 1 global mean) = G*G+1 tokens
                   -> Linear(1280, 896) -> GELU -> Linear(896, 896) -> spliced into the LLM prompt
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...vision.efficientnet import FEATURE_DIM, EfficientNetLite, preprocess


@dataclass
class PocketConfig:
    vision: str = "efficientnet-lite0"
    vision_dim: int = FEATURE_DIM
    grid: int = 3  # G: the feature map is pooled to G x G tokens, plus one global token
    hidden_size: int = 896
    llm: str = "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M"
    weights_sha256: str = ""  # of the shipped projector + LoRA (set by the loader)
    version: int = 1  # of the shipped weights (pocket.json "version"; v1 files have none)

    @property
    def n_visual_tokens(self) -> int:
        return self.grid * self.grid + 1

    def to_dict(self) -> dict:
        """What the fingerprint's config hash covers; ``version`` is left out so that v1's hash is what it always was
        (the fingerprint carries it as ``pocket_version``)."""
        out = asdict(self)
        out.pop("version")
        return out


def pool_feature_map(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, grid*grid + 1, C): a grid of local averages, then the global average."""
    local = F.adaptive_avg_pool2d(fmap, grid).flatten(2).transpose(1, 2)
    return torch.cat([local, fmap.mean(dim=(2, 3))[:, None]], dim=1)


class Projector(nn.Sequential):
    """LLaVA-1.5's two-layer MLP."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class PocketVLM(nn.Module):
    def __init__(self, llm: nn.Module, config: PocketConfig | None = None, vision: nn.Module | None = None):
        super().__init__()
        self.config = config or PocketConfig()
        self.vision = vision if vision is not None else EfficientNetLite(self.config.vision)
        self.projector = Projector(self.config.vision_dim, self.config.hidden_size)
        self.llm = llm

    @torch.no_grad()
    def pooled_features(self, images) -> torch.Tensor:
        """Photos -> (B, n_visual_tokens, 1280): what the projector reads (cacheable, vision is frozen)."""
        return pool_feature_map(self.vision.feature_map(preprocess(images)), self.config.grid)

    def visual_tokens(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, n, 1280) -> (B, n, hidden)."""
        return self.projector(pooled)
