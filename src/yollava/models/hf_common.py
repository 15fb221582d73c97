"""Shared pieces of the Hugging Face adapters: offline loading and chat-template rendering."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import EncodedImage, Message, VLMAdapter


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


def _find(name_or_path: str, filename: str) -> Path | None:
    """A file of a local checkpoint folder or of a cached hub snapshot (never downloaded)."""
    local = Path(name_or_path)
    if local.is_dir():
        return local / filename if (local / filename).exists() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name_or_path, filename)
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, (str, Path)) and Path(found).exists() else None


def _split_processor(name_or_path: str) -> ImageTextProcessor:
    from transformers import AutoImageProcessor, AutoTokenizer

    image_processor = AutoImageProcessor.from_pretrained(name_or_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    template = tokenizer.chat_template
    if found := _find(name_or_path, "chat_template.json"):
        template = json.loads(found.read_text()).get("chat_template", template)
    elif found := _find(name_or_path, "chat_template.jinja"):
        template = found.read_text()
    return ImageTextProcessor(image_processor, tokenizer, template)


def _assembled_processor(name_or_path: str):
    """The family's processor built from its parts, without the video processor (which needs
    torchvision, and which personalisation never uses)."""
    import inspect

    import transformers

    parts = _split_processor(name_or_path)
    found = _find(name_or_path, "processor_config.json")
    cfg = json.loads(found.read_text()) if found else {}
    cls_name = cfg.pop("processor_class", None)
    if cls_name is None and (found := _find(name_or_path, "tokenizer_config.json")):
        cls_name = json.loads(found.read_text()).get("processor_class")
    cls = getattr(transformers, cls_name or "", None)
    if cls is None:
        return parts

    def skip_missing(self, name, arg):  # the absent video processor is not checked against its class
        return None if arg is None else cls.check_argument_for_proper_class(self, name, arg)

    for candidate in (cls, getattr(transformers, _STAND_INS.get(cls_name, ""), None)):
        if candidate is None:
            continue
        accepted = inspect.signature(candidate.__init__).parameters
        kwargs = {k: v for k, v in cfg.items() if k in accepted}
        if "video_processor" in accepted:
            kwargs["video_processor"] = None
        sub = type(candidate.__name__, (candidate,), {"check_argument_for_proper_class": skip_missing})
        try:
            return sub(image_processor=parts.image_processor, tokenizer=parts.tokenizer, chat_template=parts.chat_template, **kwargs)
        except ImportError:  # e.g. SmolVLM's processor wants num2words, for video timestamps only
            continue
    return parts


#: processors whose photo handling is identical to another's that needs fewer extras
_STAND_INS = {"SmolVLMProcessor": "Idefics3Processor"}


def load_hf(model_cls, name_or_path: str, dtype: torch.dtype | str | None = None, device: str | None = None, **options):
    """Load model + processor from a local folder or the HF cache; never downloads.

    ``device`` / ``dtype`` default to :func:`yollava.runtime.resolve` (CUDA + bf16 when present,
    else CPU + fp32). Other options are accepted and ignored."""
    from transformers import AutoProcessor

    from ..runtime import quiet_library, resolve

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, dtype = resolve(device, dtype)
    with quiet_library():
        model = model_cls.from_pretrained(name_or_path, local_files_only=True, dtype=dtype).to(device)
        try:
            processor = AutoProcessor.from_pretrained(name_or_path, local_files_only=True)
        except (ImportError, AttributeError, ValueError, OSError, TypeError):
            processor = _assembled_processor(name_or_path)
    return model, processor


def conversation(messages: list[Message]) -> list[dict]:
    return [
        {"role": m.role, "content": ([{"type": "image"}] if m.has_image else []) + [{"type": "text", "text": m.content}]}
        for m in messages
    ]


def render_with_template(processor, messages: list[Message], add_generation_prompt: bool, fallback) -> str:
    """Use the checkpoint's chat template when it has one, else ``fallback(messages)``."""
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        return fallback(messages, add_generation_prompt)
    return processor.apply_chat_template(conversation(messages), add_generation_prompt=add_generation_prompt, tokenize=False)


def decoder_forward(language_model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache, **extra):
    """Run a transformers decoder; the KV cache goes in as ``cache`` where the model has renamed
    ``past_key_values`` (transformers 5.x deprecates the old name)."""
    import inspect

    params = inspect.signature(language_model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    out = language_model(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=use_cache,
        **{cache_kw: past_key_values},
        **extra,
    )
    fields = out.keys() if hasattr(out, "keys") else ()
    past = out["cache"] if "cache" in fields else out["past_key_values"] if "past_key_values" in fields else None
    return out.last_hidden_state, past


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

    @property
    def language_model(self) -> nn.Module:
        inner = self.model.model
        return inner.language_model if hasattr(inner, "language_model") else inner.text_model  # Idefics3 / SmolVLM

    def decoder(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return decoder_forward(self.language_model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)


class ProcessorAdapter(HFAdapter):
    """A family whose processor expands one image placeholder (``processor.image_token``) into the
    prompt tokens the model expects (tiles, rows, newlines, start/end markers: ``replace_image_token``),
    and whose model writes ``get_image_features`` into the ``image_token_id`` positions, in order.

    Subclasses name the family, a fallback chat template in the family's format (used when a
    checkpoint ships none), the end-of-turn token, and, where needed, override
    :meth:`image_features` (the tensors the model's own forward would splice in)."""

    template: str = ""
    eot: str | None = None  # None: the tokenizer's eos token

    def __init__(self, model, processor, model_id: str):
        if not getattr(processor, "chat_template", None) and self.template:
            processor.chat_template = self.template
        super().__init__(model, processor, model_id)
        self.image_marker = processor.image_token

    @property
    def end_of_turn(self) -> str:
        return self.eot or self.tokenizer.eos_token

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        return render_with_template(self.processor, messages, add_generation_prompt, None)

    def processor_inputs(self, image) -> dict:
        """What the family's processor makes of one photo alone: ``input_ids`` (the expanded placeholder)
        and the pixel tensors."""
        return self.processor(images=[image], text=self.image_marker, return_tensors="pt", add_special_tokens=False)

    def image_features(self, inputs: dict) -> torch.Tensor:
        """``(n_image_tokens, hidden)``: the family's ``get_image_features`` on the processor's tensors."""
        import inspect

        fn = self.model.model.get_image_features
        cfg = self.model.config
        params = inspect.signature(fn).parameters
        kwargs = {k: v.to(self.device) for k, v in inputs.items() if k in params and k != "input_ids" and torch.is_tensor(v)}
        for name in ("vision_feature_layer", "vision_feature_select_strategy", "vision_aspect_ratio"):
            if name in params and hasattr(cfg, name):
                kwargs[name] = getattr(cfg, name)
        if "pixel_values" in kwargs and kwargs["pixel_values"].is_floating_point():
            kwargs["pixel_values"] = kwargs["pixel_values"].to(self.model_dtype)
        out = fn(**kwargs)
        feats = getattr(out, "pooler_output", out)
        if isinstance(feats, (list, tuple)):
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats])
        return feats.reshape(-1, feats.shape[-1])

    def extra(self, inputs: dict) -> dict:
        return {}

    @torch.no_grad()
    def encode_images(self, images) -> list[EncodedImage]:
        out = []
        for img in images:  # one at a time: tiles and grids differ per photo
            inputs = self.processor_inputs(img)
            ids = inputs["input_ids"][0].tolist()
            feats = self.image_features(inputs)
            n = ids.count(self.image_token_id)
            if n != feats.shape[0]:
                raise RuntimeError(f"{self.family}: the processor made {n} image tokens but the model gave {feats.shape[0]} features")
            out.append(EncodedImage(feats.to(self.model_dtype), ids, self.extra(inputs)))
        return out


class VisualPositionsMixin:
    """For families whose decoder needs to know where the photo tokens are (Qwen3-VL's deepstack
    features, Gemma 3's bidirectional attention over each photo).

    The engine calls :meth:`position_ids` with the token ids right before running the decoder on
    the same batch; the positions and photos are kept for that one call, matched by shape."""

    _pending: tuple | None = None

    def remember_visual(self, input_ids: torch.Tensor, images) -> None:
        mask = input_ids == self.image_token_id
        self._pending = (tuple(input_ids.shape), mask, [img for row in images for img in row]) if bool(mask.any()) else None

    def take_visual(self, inputs_embeds: torch.Tensor):
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != tuple(inputs_embeds.shape[:2]):
            return None, []
        return pending[1], pending[2]
