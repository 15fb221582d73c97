"""LLaVA-1.5 / LLaVA-style checkpoints (``LlavaForConditionalGeneration``): the paper's model."""

from __future__ import annotations

import torch
from PIL import Image

from . import register
from .base import EncodedImage, Message
from .hf_common import HFAdapter, load_hf, render_with_template


class LlavaAdapter(HFAdapter):
    family = "llava"

    def __init__(self, model, processor, model_id: str):
        super().__init__(model, processor, model_id)
        self.image_marker = getattr(processor, "image_token", None) or "<image>"

    @property
    def end_of_turn(self) -> str:
        return self.tokenizer.eos_token

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> list[EncodedImage]:
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixels.to(self.device, self.model_dtype),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        ).pooler_output
        return [EncodedImage(f, [self.image_token_id] * f.shape[0]) for f in out]

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        text = render_with_template(self.processor, messages, add_generation_prompt, self._llava15_format)
        bos = self.tokenizer.bos_token
        if bos and getattr(self.tokenizer, "add_bos_token", True) and not text.startswith(bos):
            text = bos + text
        return text

    def _llava15_format(self, messages: list[Message], add_generation_prompt: bool) -> str:
        turns = []
        for m in messages:
            if m.role == "user":
                turns.append("USER: " + (self.image_marker + "\n" if m.has_image else "") + m.content)
            elif m.role == "assistant":
                turns.append("ASSISTANT: " + m.content + self.end_of_turn)
            else:
                turns.append(m.content)
        return " ".join(turns) + (" ASSISTANT:" if add_generation_prompt else "")


@register("llava")
def load_llava(name_or_path: str, **kwargs) -> LlavaAdapter:
    from transformers import LlavaForConditionalGeneration

    model, processor = load_hf(LlavaForConditionalGeneration, name_or_path, **kwargs)
    return LlavaAdapter(model, processor, name_or_path)
