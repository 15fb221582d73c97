"""Qwen2-VL checkpoints (``Qwen2VLForConditionalGeneration``): dynamic-resolution photos, 3-D RoPE."""

from __future__ import annotations

import torch
from PIL import Image

from . import register
from .base import EncodedImage, Message
from .hf_common import HFAdapter, load_hf, render_with_template


class Qwen2VLAdapter(HFAdapter):
    supports_prefix_cache = False  # its own position ids / photo masks (see VLMAdapter.supports_prefix_cache)
    supports_batched_generation = False
    family = "qwen2_vl"
    image_marker = "<|vision_start|><|image_pad|><|vision_end|>"

    def __init__(self, model, processor, model_id: str):
        super().__init__(model, processor, model_id)
        tok = self.tokenizer
        self._start, self._end = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|vision_end|>")

    @property
    def end_of_turn(self) -> str:
        return "<|im_end|>"

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> list[EncodedImage]:
        out = []
        for img in images:  # one at a time: each photo has its own grid
            inputs = self.processor.image_processor(images=[img], return_tensors="pt")
            grid = inputs["image_grid_thw"]
            feats = self.model.model.get_image_features(inputs["pixel_values"].to(self.device, self.model.model.visual.dtype), grid.to(self.device)).pooler_output[0]
            ids = [self._start] + [self.image_token_id] * feats.shape[0] + [self._end]
            out.append(EncodedImage(feats.to(self.model_dtype), ids, {"image_grid_thw": grid[0]}))
        return out

    def position_ids(self, input_ids, attention_mask, images):
        return qwen_rope_positions(self.model.model, self.image_token_id, input_ids, attention_mask, images)

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        return render_with_template(self.processor, messages, add_generation_prompt, self._chatml)

    def _chatml(self, messages: list[Message], add_generation_prompt: bool) -> str:
        parts = []
        for m in messages:
            content = (self.image_marker if m.has_image else "") + m.content
            parts.append(f"<|im_start|>{m.role}\n{content}<|im_end|>\n")
        return "".join(parts) + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@register("qwen2_vl")
def load_qwen2_vl(name_or_path: str, **kwargs) -> Qwen2VLAdapter:
    from transformers import Qwen2VLForConditionalGeneration

    model, processor = load_hf(Qwen2VLForConditionalGeneration, name_or_path, **kwargs)
    return Qwen2VLAdapter(model, processor, name_or_path)


def qwen_rope_positions(language_model, image_token_id: int, input_ids, attention_mask, images):
    """The 3-D (temporal, height, width) RoPE positions the Qwen-VL families give a batch with photos (each
    photo's ``image_grid_thw`` in its ``extra``); ``None`` without photos (plain 0..T-1)."""
    grids = [img.extra["image_grid_thw"] for row in images for img in row]
    if not grids:
        return None
    positions, _ = language_model.get_rope_index(
        input_ids,
        mm_token_type_ids=(input_ids == image_token_id).int(),
        image_grid_thw=torch.stack(grids).to(input_ids.device),
        attention_mask=attention_mask,
    )
    return positions
