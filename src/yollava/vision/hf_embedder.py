"""An image embedder from a local Hugging Face checkpoint: CLIP (image features), SigLIP, DINO / DINOv2 (the CLS token).

The papers measure generated pictures with CLIP-I and DINO similarity; none of those weights ship here, so the
product's embedder is EfficientNet-Lite0. A user who has a checkpoint passes its folder (or HF-cache id) to
``yollava eval generation --embedder`` or sets it with :func:`yollava.who.set_embedder`. Loaded with
``local_files_only``: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image


class HFImageEmbedder:
    """``embed(list[PIL.Image]) -> (n, d)`` from a local CLIP / SigLIP / DINO checkpoint (eval mode, no gradients)."""

    def __init__(self, name_or_path: str | Path, device: str = "cpu"):
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        try:
            config = AutoConfig.from_pretrained(str(name_or_path), local_files_only=True)
            self.processor = AutoImageProcessor.from_pretrained(str(name_or_path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(name_or_path), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load an image embedder from {name_or_path!r}: {e}. Give a local folder (or an id in the "
                             "Hugging Face cache) of a CLIP, SigLIP or DINO checkpoint with its image processor.") from None
        if not (hasattr(self.model, "get_image_features") or hasattr(self.model.config, "image_size")):
            raise ValueError(f"{name_or_path!r} is a {config.model_type} checkpoint, not an image model (CLIP, SigLIP or DINO)")
        self.device = device
        digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        #: what indexes and signatures remember about the embedder (vectors of different embedders never mix)
        self.fingerprint = f"hf-image:{config.model_type}:{Path(str(name_or_path)).name}:{digest}"

    @torch.no_grad()
    def embed(self, images: list[Image.Image], batch_size: int = 16) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            batch = self.processor(images=[im.convert("RGB") for im in images[i : i + batch_size]], return_tensors="pt")
            pixels = batch["pixel_values"].to(self.device)
            if hasattr(self.model, "get_image_features"):  # CLIP / SigLIP: the projected image embedding
                v = self.model.get_image_features(pixel_values=pixels)
                v = getattr(v, "pooler_output", v)
            else:  # a vision-only model (DINO, DINOv2, a CLIP vision tower): the CLS token
                v = self.model(pixel_values=pixels).last_hidden_state[:, 0]
            out.append(v.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)
