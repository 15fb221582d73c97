"""Shared pieces of the Hugging Face adapters: offline loading and chat-template rendering."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Message, VLMAdapter


@dataclass
class ImageTextProcessor:
    """The two halves of a processor, for families whose full processor needs extras we lack
    (Qwen2-VL's bundles a video processor that requires torchvision)."""

    image_processor: Any
    tokenizer: Any
    chat_template: str | None = None

    def apply_chat_template(self, conversation, **kwargs):
        return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.chat_template:
            (Path(path) / "chat_template.json").write_text(json.dumps({"chat_template": self.chat_template}))


def _split_processor(name_or_path: str) -> ImageTextProcessor:
    from huggingface_hub import try_to_load_from_cache
    from transformers import AutoImageProcessor, AutoTokenizer

    image_processor = AutoImageProcessor.from_pretrained(name_or_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    template = tokenizer.chat_template
    local = Path(name_or_path) / "chat_template.json"
    found = local if local.exists() else try_to_load_from_cache(name_or_path, "chat_template.json")
    if isinstance(found, (str, Path)) and Path(found).exists():
        template = json.loads(Path(found).read_text()).get("chat_template", template)
    return ImageTextProcessor(image_processor, tokenizer, template)


def load_hf(model_cls, name_or_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Load model + processor from a local folder or the HF cache; never downloads."""
    from transformers import AutoProcessor

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = model_cls.from_pretrained(name_or_path, local_files_only=True, dtype=dtype).to(device)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, local_files_only=True)
    except (ImportError, AttributeError, ValueError):
        processor = _split_processor(name_or_path)
    return model, processor


def render_with_template(processor, messages: list[Message], add_generation_prompt: bool, fallback) -> str:
    """Use the checkpoint's chat template when it has one, else ``fallback(messages)``."""
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        return fallback(messages, add_generation_prompt)
    conversation = [
        {
            "role": m.role,
            "content": ([{"type": "image"}] if m.has_image else []) + [{"type": "text", "text": m.content}],
        }
        for m in messages
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)


def decoder_forward(language_model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache):
    out = language_model(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=past_key_values,
        use_cache=use_cache,
    )
    return out.last_hidden_state, out.past_key_values


class HFAdapter(VLMAdapter):
    """What every ``*ForConditionalGeneration`` with ``.model.language_model`` and ``.lm_head`` shares."""

    def __init__(self, model, processor, model_id: str):
        super().__init__(model, processor.tokenizer, model_id)
        self.processor = processor

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.lm_head

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    def decoder(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return decoder_forward(self.model.model.language_model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)
