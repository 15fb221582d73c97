"""LLaVA-1.5 / LLaVA-style checkpoints (``LlavaForConditionalGeneration``): the paper's model."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from . import register
from .base import EncodedImage, Message, VLMAdapter
from .hf_common import decoder_forward, load_hf, render_with_template


class LlavaAdapter(VLMAdapter):
    family = "llava"

    def __init__(self, model, processor, model_id: str):
        super().__init__(model, processor.tokenizer, model_id)
        self.processor = processor
        self.image_marker = getattr(processor, "image_token", None) or "<image>"

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.lm_head

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def end_of_turn(self) -> str:
        return self.tokenizer.eos_token

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> list[EncodedImage]:
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixels.to(self.device, self.dtype),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        ).pooler_output
        return [EncodedImage(f, [self.image_token_id] * f.shape[0]) for f in out]

    def decoder(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return decoder_forward(self.model.model.language_model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)

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
def load_llava(name_or_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LlavaAdapter:
    from transformers import LlavaForConditionalGeneration

    model, processor = load_hf(LlavaForConditionalGeneration, name_or_path, dtype, device)
    return LlavaAdapter(model, processor, name_or_path)
