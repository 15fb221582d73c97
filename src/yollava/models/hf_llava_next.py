"""LLaVA-NeXT (1.6) and LLaVA-OneVision: any-resolution tiling, unpadded grid features with a
learned newline per row (``LlavaNextForConditionalGeneration``, ``LlavaOnevisionForConditionalGeneration``).

The processor decides how many ``<image>`` tokens a photo needs from its size; the model's
``get_image_features`` returns exactly that many (tiles, unpadding and newlines included)."""

from __future__ import annotations

from . import register
from .hf_common import ProcessorAdapter, load_hf

# Mistral-style [INST] format, as llava-v1.6-mistral; real checkpoints ship their own template
NEXT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
    "{% else %}{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{{ eos_token }}{% endif %}{% endfor %}"
)
# ChatML, as llava-onevision-qwen2
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class LlavaNextAdapter(ProcessorAdapter):
    family = "llava_next"
    template = NEXT_TEMPLATE


class LlavaOnevisionAdapter(ProcessorAdapter):
    family = "llava_onevision"
    template = CHATML_TEMPLATE
    eot = "<|im_end|>"


@register("llava_next")
def load_llava_next(name_or_path: str, **kwargs) -> LlavaNextAdapter:
    from transformers import LlavaNextForConditionalGeneration

    return LlavaNextAdapter(*load_hf(LlavaNextForConditionalGeneration, name_or_path, **kwargs), name_or_path)


@register("llava_onevision")
def load_llava_onevision(name_or_path: str, **kwargs) -> LlavaOnevisionAdapter:
    from transformers import LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionAdapter(*load_hf(LlavaOnevisionForConditionalGeneration, name_or_path, **kwargs), name_or_path)
