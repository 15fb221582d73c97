"""Qwen2.5-VL and Qwen3-VL: dynamic-resolution photos, 3-D (multimodal) RoPE; Qwen3-VL also adds
its vision tower's "deepstack" features to the first decoder layers' hidden states at the photo
positions (``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``)."""

from __future__ import annotations

import torch

from . import register
from .hf_common import ProcessorAdapter, decoder_forward, VisualPositionsMixin, load_hf
from .hf_qwen2_vl import qwen_rope_positions

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen25VLAdapter(ProcessorAdapter):
    """The processor expands ``<|image_pad|>`` alone; ``<|vision_start|>``/``<|vision_end|>`` come from the template."""

    supports_prefix_cache = False  # its own position ids / photo masks (see VLMAdapter.supports_prefix_cache)
    supports_batched_generation = False

    family = "qwen2_5_vl"
    template = QWEN_TEMPLATE
    eot = "<|im_end|>"

    def extra(self, inputs):
        return {"image_grid_thw": inputs["image_grid_thw"][0]}

    def position_ids(self, input_ids, attention_mask, images):
        return qwen_rope_positions(self.model.model, self.image_token_id, input_ids, attention_mask, images)


class Qwen3VLAdapter(VisualPositionsMixin, Qwen25VLAdapter):
    family = "qwen3_vl"

    def image_features(self, inputs):
        out = self.model.model.get_image_features(inputs["pixel_values"].to(self.device), inputs["image_grid_thw"].to(self.device))
        self._deepstack = [torch.cat(level) for level in out.deepstack_features]
        return torch.cat(out.pooler_output)

    def extra(self, inputs):
        return {"image_grid_thw": inputs["image_grid_thw"][0], "deepstack": self._deepstack}

    def position_ids(self, input_ids, attention_mask, images):
        self.remember_visual(input_ids, images)
        return super().position_ids(input_ids, attention_mask, images)

    def decoder(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        mask, imgs = self.take_visual(inputs_embeds)
        extra = {}
        if mask is not None:
            levels = zip(*(img.extra["deepstack"] for img in imgs))
            extra = {"visual_pos_masks": mask, "deepstack_visual_embeds": [torch.cat(lv).to(inputs_embeds.dtype) for lv in levels]}
        return decoder_forward(self.language_model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache, **extra)


@register("qwen2_5_vl")
def load_qwen2_5_vl(name_or_path: str, **kwargs) -> Qwen25VLAdapter:
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen25VLAdapter(*load_hf(Qwen2_5_VLForConditionalGeneration, name_or_path, **kwargs), name_or_path)


@register("qwen3_vl")
def load_qwen3_vl(name_or_path: str, **kwargs) -> Qwen3VLAdapter:
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLAdapter(*load_hf(Qwen3VLForConditionalGeneration, name_or_path, **kwargs), name_or_path)
