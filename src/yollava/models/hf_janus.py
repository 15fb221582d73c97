"""Janus / Janus-Pro (``JanusForConditionalGeneration``): a unified model that reads photos (SigLIP -> aligner ->
``num_image_tokens`` soft tokens between ``<begin_of_image>``/``<end_of_image>``) and *writes* them: after
``<begin_of_image>`` it predicts the codes of a VQ image tokenizer with its own head (``generation_head``), feeds
each code back through its own embedding (``generation_embeddings`` + ``generation_aligner``), and the VQ decoder
turns the codes into pixels (``decode_image_tokens``). Llama decoder; Janus-Pro-1B/7B are the published sizes.

Understanding goes through :class:`~yollava.models.hf_common.ProcessorAdapter` like every other family; drawing
through :class:`~yollava.models.base.ImageWriter`, with transformers' own modules for each step (the engine's
generation loop is checked against ``generate(generation_mode="image")`` in ``tests/test_yochameleon.py``)."""

from __future__ import annotations

import torch
from PIL import Image

from . import register
from .base import ImageWriter, Message
from .hf_common import ProcessorAdapter, load_hf, render_with_template

#: the format of Janus-Pro's chat template, for checkpoints that ship none (the tiny test checkpoints)
JANUS_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|User|>: {% elif message['role'] == 'assistant' %}<|Assistant|>: "
    "{% else %}{{ message['role'] | capitalize }}: {% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image_placeholder>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}<｜end▁of▁sentence｜>{% else %}{{ '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


class JanusAdapter(ImageWriter, ProcessorAdapter):
    family = "janus"
    template = JANUS_TEMPLATE

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        text = render_with_template(self.processor, messages, add_generation_prompt, None)
        bos = self.tokenizer.bos_token  # Janus's tokenizer adds BOS itself; prompts here are tokenised without specials
        return text if not bos or text.startswith(bos) else bos + text

    # ---- drawing (ImageWriter) --------------------------------------------------------------
    @property
    def default_guidance(self) -> float:
        scale = getattr(self.model.generation_config, "guidance_scale", None)
        return float(scale) if scale else 5.0  # what JanusForConditionalGeneration.generate falls back to

    @property
    def num_image_tokens(self) -> int:
        return self.model.model.vision_model.config.num_image_tokens

    @property
    def image_size(self) -> tuple[int, int] | None:
        size = getattr(self.processor.image_processor, "size", None) or {}
        return (size["width"], size["height"]) if "width" in size and "height" in size else None

    @property
    def image_start_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.processor.image_start_token)

    @torch.no_grad()
    def image_codes(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor.image_processor([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        vq = self.model.model.vqmodel
        codes = vq.encode(pixels.to(self.device, next(vq.parameters()).dtype)).image_tokens
        return codes.reshape(len(images), -1)

    def image_code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.prepare_embeddings_for_image_generation(codes)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.model.generation_head(hidden)

    @torch.no_grad()
    def decode_image_codes(self, codes: torch.Tensor) -> list[Image.Image]:
        pixels = self.model.decode_image_tokens(codes.to(self.device))  # (n, H, W, 3), normalised like the inputs
        # channels first: the image processor's PIL backend normalises along the first axis
        chw = [p.permute(2, 0, 1).float().cpu() for p in pixels]
        out = self.processor.postprocess(chw, return_tensors="PIL.Image.Image", input_data_format="channels_first")
        return list(out["pixel_values"])


@register("janus")
def load_janus(name_or_path: str, **kwargs) -> JanusAdapter:
    from transformers import JanusForConditionalGeneration

    return JanusAdapter(*load_hf(JanusForConditionalGeneration, name_or_path, **kwargs), name_or_path)
