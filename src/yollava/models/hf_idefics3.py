"""Idefics3 and SmolVLM: each photo split into a grid of tiles plus a global view, each tile
``<fake_token_around_image><row_i_col_j>`` + ``image_seq_len`` tokens after pixel shuffle
(``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``)."""

from __future__ import annotations

from . import register
from .hf_common import ProcessorAdapter, load_hf

IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


class Idefics3Adapter(ProcessorAdapter):
    family = "idefics3"
    template = IDEFICS3_TEMPLATE
    eot = "<end_of_utterance>"


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"


@register("idefics3")
def load_idefics3(name_or_path: str, **kwargs) -> Idefics3Adapter:
    from transformers import Idefics3ForConditionalGeneration

    return Idefics3Adapter(*load_hf(Idefics3ForConditionalGeneration, name_or_path, **kwargs), name_or_path)


@register("smolvlm")
def load_smolvlm(name_or_path: str, **kwargs) -> SmolVLMAdapter:
    from transformers import SmolVLMForConditionalGeneration

    return SmolVLMAdapter(*load_hf(SmolVLMForConditionalGeneration, name_or_path, **kwargs), name_or_path)
