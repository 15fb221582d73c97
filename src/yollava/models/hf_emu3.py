"""Emu3 (``Emu3ForConditionalGeneration``): a unified model whose photos *are* text tokens. A VQ tokenizer turns a
photo into an h x w grid of codes, each one a ``<|visual token NNNNNN|>`` of the vocabulary, rows ended by an
end-of-line token; a photo in a prompt is ``<|image start|>h*w<|image token|>`` + those tokens + ``<|extra_201|>``
(end of frame) ``<|image end|>``. Understanding splices the embeddings of those tokens
(``get_image_features``) where the processor put its placeholders, like every other family
(:class:`~yollava.models.hf_common.ProcessorAdapter`). Drawing (:class:`~yollava.models.base.ImageWriter`) predicts
the same tokens with the ordinary output layer after ``<|image start|>h*w<|image token|>``: visual tokens, and the
end-of-line token at the end of each row (:meth:`Emu3Adapter.code_mask`, what Emu3's ``prefix_allowed_tokens_fn``
does), each fed back through the ordinary embedding; ``decode_image_tokens`` turns them into pixels. Photos to
reconstruct are resized to the drawn grid first, so the codes of a photo and of a drawing line up."""

from __future__ import annotations

import functools

import torch
from PIL import Image

from . import register
from .base import ImageWriter, Message
from .hf_common import ProcessorAdapter, load_hf, render_with_template

#: Emu3-Chat's prompt format, for checkpoints that ship no chat template (the tiny test checkpoints)
EMU3_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}<|extra_204|>{% endif %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
#: the picture area Emu3's processor draws by default (720 x 720 px)
DEFAULT_IMAGE_AREA = 518400


class Emu3Adapter(ImageWriter, ProcessorAdapter):
    family = "emu3"
    template = EMU3_TEMPLATE
    default_guidance = 3.0  # Emu3's examples draw with guidance 3
    guidance_on_log_probs = True  # Emu3 is guided through generate's UnbatchedClassifierFreeGuidanceLogitsProcessor

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        text = render_with_template(self.processor, messages, add_generation_prompt, None)
        bos = self.tokenizer.bos_token
        return text if not bos or text.startswith(bos) else bos + text

    def processor_inputs(self, image) -> dict:
        inputs = super().processor_inputs(image)
        bos = self.tokenizer.bos_token_id
        if bos is not None and int(inputs["input_ids"][0, 0]) == bos:  # Emu3's processor adds BOS even when asked not to
            inputs["input_ids"] = inputs["input_ids"][:, 1:]
        return inputs

    # ---- drawing (ImageWriter) --------------------------------------------------------------
    @functools.cached_property
    def grid(self) -> tuple[int, int]:
        """``(rows, columns)`` of codes in a drawn picture: the processor's generation size for a square picture."""
        area = min(getattr(self.processor, "image_area", DEFAULT_IMAGE_AREA), self.processor.image_processor.max_pixels)
        return tuple(self.processor.calculate_generate_size("1:1", area, self.processor.downsample_ratio))

    @property
    def num_image_tokens(self) -> int:
        h, w = self.grid
        return h * (w + 1)  # each row ends with the end-of-line token

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.grid
        return w * self.processor.downsample_ratio, h * self.processor.downsample_ratio

    @property
    def image_start_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.processor.image_start_token)

    @functools.cached_property
    def image_prefix_ids(self) -> list[int]:
        h, w = self.grid
        p = self.processor
        return self.tokenizer(f"{p.image_start_token}{h}*{w}{p.fake_token_around_image}", add_special_tokens=False)["input_ids"]

    @functools.cached_property
    def _masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        mapping = self.model.model.vocabulary_mapping
        n = self.lm_head.weight.shape[0]
        visual = torch.zeros(n, dtype=torch.bool)
        visual[mapping.image_tokens] = True
        eol = torch.zeros(n, dtype=torch.bool)
        eol[mapping.eol_token_id] = True
        return visual.to(self.device), eol.to(self.device)

    def code_mask(self, position: int) -> torch.Tensor:
        visual, eol = self._masks
        return eol if position % (self.grid[1] + 1) == self.grid[1] else visual

    @torch.no_grad()
    def image_codes(self, images: list[Image.Image]) -> torch.Tensor:
        w, h = self.image_size
        photos = [_square(im.convert("RGB")).resize((w, h), Image.BICUBIC) for im in images]
        inputs = self.processor.image_processor(photos, return_tensors="pt")
        sizes = inputs["image_sizes"]
        if any(tuple(int(x) for x in s) != (h, w) for s in sizes):
            raise RuntimeError(f"emu3: photos resized to {w}x{h} were processed at {sizes.tolist()}; cannot line them up with a drawing")
        vq = self.model.model.vqmodel
        codes = self.model.model.get_image_tokens(inputs["pixel_values"].to(self.device, vq.dtype), sizes.to(self.device))
        return codes.reshape(len(images), -1).long()

    def image_code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(codes)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    @torch.no_grad()
    def decode_image_codes(self, codes: torch.Tensor) -> list[Image.Image]:
        h, w = self.grid
        tail = torch.full((codes.shape[0], 3), self.tokenizer.pad_token_id or 0, dtype=codes.dtype, device=codes.device)
        pixels = self.model.model.decode_image_tokens(torch.cat([codes.to(self.device), tail.to(self.device)], dim=1), height=h, width=w)
        out = self.processor.postprocess(list(pixels.float().cpu()), return_tensors="PIL.Image.Image")
        return list(out["pixel_values"])


def _square(image: Image.Image) -> Image.Image:
    """The centre square of ``image`` (drawings are square)."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


@register("emu3")
def load_emu3(name_or_path: str, **kwargs) -> Emu3Adapter:
    from transformers import Emu3ForConditionalGeneration

    return Emu3Adapter(*load_hf(Emu3ForConditionalGeneration, name_or_path, **kwargs), name_or_path)
