"""InternVL (HF-native checkpoints, e.g. ``OpenGVLab/InternVL3-1B-hf``; ``InternVLForConditionalGeneration``):
photos cropped into 448-px tiles (+ thumbnail), each tile pixel-shuffled to ``image_seq_length``
``<IMG_CONTEXT>`` tokens between ``<img>``/``</img>``; Qwen2 / Llama decoder."""

from __future__ import annotations

from . import register
from .hf_common import ProcessorAdapter, load_hf

INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class InternVLAdapter(ProcessorAdapter):
    family = "internvl"
    template = INTERNVL_TEMPLATE
    eot = "<|im_end|>"


@register("internvl")
def load_internvl(name_or_path: str, **kwargs) -> InternVLAdapter:
    from transformers import InternVLForConditionalGeneration

    return InternVLAdapter(*load_hf(InternVLForConditionalGeneration, name_or_path, **kwargs), name_or_path)
