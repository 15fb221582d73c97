"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP photo -> 256 pooled soft tokens between
``<start_of_image>``/``<end_of_image>``, attended bidirectionally within the photo; sliding-window
layers; input embeddings scaled by sqrt(hidden) and tied to the output layer.

Concept rows are stored unscaled, like the table they are initialised from; ``ConceptBank.embed``
applies the table's ``embed_scale``, so they enter the decoder on the same scale as words."""

from __future__ import annotations

from . import register
from .hf_common import ProcessorAdapter, decoder_forward, VisualPositionsMixin, load_hf

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class Gemma3Adapter(VisualPositionsMixin, ProcessorAdapter):
    supports_prefix_cache = False  # its own position ids / photo masks (see VLMAdapter.supports_prefix_cache)
    supports_batched_generation = False
    family = "gemma3"
    template = GEMMA3_TEMPLATE
    eot = "<end_of_turn>"

    def __init__(self, model, processor, model_id: str):
        cap = model.config.get_text_config().final_logit_softcapping
        if cap is not None:  # the concept column would not be soft-capped like the others
            raise ValueError(f"{model_id}: Gemma 3 with final_logit_softcapping={cap} is not supported")
        super().__init__(model, processor, model_id)

    def position_ids(self, input_ids, attention_mask, images):
        self.remember_visual(input_ids, images)
        return None

    def decoder(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        from transformers.models.gemma3.modeling_gemma3 import create_masks_for_vision_model, get_block_sequence_ids_for_mask

        mask, _ = self.take_visual(inputs_embeds)
        lm = self.language_model
        if mask is not None:  # what Gemma3Model.forward does when given token_type_ids: photos see themselves whole
            attention_mask = create_masks_for_vision_model(
                config=lm.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=past_key_values,
                position_ids=position_ids, block_sequence_ids=get_block_sequence_ids_for_mask(mask.long(), inputs_embeds.device),
            )
        return decoder_forward(lm, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)


@register("gemma3")
def load_gemma3(name_or_path: str, **kwargs) -> Gemma3Adapter:
    from transformers import Gemma3ForConditionalGeneration

    return Gemma3Adapter(*load_hf(Gemma3ForConditionalGeneration, name_or_path, **kwargs), name_or_path)
