"""Randomly initialised checkpoints of the supported HF families, built locally (no hub).

Tests use tiny ones; speed benchmarks use full-size shapes (speed does not depend on the weights).
Each folder holds what a real checkpoint holds (config, weights, tokenizer, processor, chat
template), so it loads through exactly the same code path as a downloaded model.
"""

from __future__ import annotations

from pathlib import Path

import torch

_CORPUS = [
    "Is <sks> in this photo? Yes, it is in this photo. No, it is not in this photo.",
    "What color is the dog? The dog is brown and white with a fluffy tail.",
    "Can you see if this is in the picture? Answer with a single word or phrase.",
    "A photo of a cat, a mug, a person, a car, a tree. What is in this image?",
    "You are a helpful assistant. Describe the subject, its shape, material, size and texture.",
] * 20

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_tokenizer(special: list[str], vocab_size: int = 600, **named):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


def build_tiny_llava(
    path: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0, tie: bool = False, init_range: float = 0.02
) -> Path:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    tok = byte_level_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.add_bos_token = True
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    text = LlamaConfig(
        vocab_size=len(tok) + 8,  # padded table, as real checkpoints have
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        initializer_range=init_range,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_id, vision_feature_layer=-2, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=LLAVA_TEMPLATE, patch_size=8, vision_feature_select_strategy="default"
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_qwen2_vl(path: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0, init_range: float = 0.02) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from .hf_common import ImageTextProcessor

    path = Path(path)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = byte_level_tokenizer(special, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok) + 8,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            tie_word_embeddings=False,
            initializer_range=init_range,
            bos_token_id=None,
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    processor = ImageTextProcessor(image_processor, tok, QWEN_TEMPLATE)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ---- the other families: one generic saver, one small config builder each ------------------------

_TEXT = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def _text_config(tok, hidden, layers, init_range, tie=False, **extra):
    return dict(
        vocab_size=len(tok) + 8, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        tie_word_embeddings=tie, initializer_range=init_range, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **_TEXT, **extra,
    )


def save_checkpoint(path: str | Path, model, image_processor, tokenizer, processor_cls: str, template: str, **processor_kwargs) -> Path:
    """Write what a hub checkpoint holds. The processor is stored as its parts plus ``processor_config.json``
    (some processors bundle a video processor that needs torchvision, which the adapters never use)."""
    import json

    path = Path(path)
    model.save_pretrained(path)
    image_processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": processor_cls, **processor_kwargs}, indent=1))
    (path / "chat_template.jinja").write_text(template)
    return path


def _build(cfg, seed):
    """A random model whose photo path carries signal: the vision tower and projector get unit-gain
    weights (families default to std 0.02 there, and Gemma 3 to a zero projector, which would make
    every photo look the same to a tiny random decoder)."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(cfg).eval()
    text = ("language_model", "text_model", "lm_head", "embed_tokens")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not any(t in name for t in text) and "position" not in name and "norm" not in name:
                fan_in = p[0].numel() if "mm_input_projection" not in name else p.shape[0]
                p.normal_(0.0, fan_in**-0.5)
    return model


_VISION_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def build_tiny_llava_next(path, hidden=64, layers=2, seed=0, init_range=0.02, onevision=False) -> Path:
    """Any-resolution tiles of 32 px on a 2x2 grid of pinpoints; CLIP (NeXT) or SigLIP (OneVision) tower."""
    from transformers import LlavaNextConfig, LlavaNextImageProcessorPil, LlavaOnevisionConfig, LlavaOnevisionImageProcessorPil

    from .hf_llava_next import CHATML_TEMPLATE, NEXT_TEMPLATE

    if onevision:
        tok = byte_level_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    else:
        tok = byte_level_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    common = dict(text_config=dict(model_type="qwen2" if onevision else "llama", **_text_config(tok, hidden, layers, init_range)),
                  image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints, tie_word_embeddings=False)
    size = {"height": 32, "width": 32}
    if onevision:
        vision = dict(model_type="siglip_vision_model", **_VISION_CLIP)
        cfg = LlavaOnevisionConfig(vision_config=vision, video_token_index=tok.convert_tokens_to_ids("<video>"), **common)
        ip = LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=pinpoints, do_pad=True)
        extra = dict(num_image_tokens=16, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
        return save_checkpoint(path, _build(cfg, seed), ip, tok, "LlavaOnevisionProcessor", CHATML_TEMPLATE, **extra)
    cfg = LlavaNextConfig(vision_config=dict(model_type="clip_vision_model", **_VISION_CLIP), **common)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size=size, image_grid_pinpoints=pinpoints)
    extra = dict(patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return save_checkpoint(path, _build(cfg, seed), ip, tok, "LlavaNextProcessor", NEXT_TEMPLATE, **extra)


def build_tiny_llava_onevision(path, **kw) -> Path:
    return build_tiny_llava_next(path, onevision=True, **kw)


_QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def build_tiny_qwen_vl(path, hidden=64, layers=2, seed=0, init_range=0.02, version="2.5") -> Path:
    """Qwen2.5-VL (window attention in the vision tower) or Qwen3-VL (deepstack); 3-D RoPE in both."""
    from transformers import Qwen2VLImageProcessorPil

    from .hf_qwen_vl import QWEN_TEMPLATE

    tok = byte_level_tokenizer(_QWEN_SPECIAL, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    text = _text_config(tok, hidden, layers, init_range)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    patch = 8
    if version == "3":
        from transformers import Qwen3VLConfig

        text |= dict(head_dim=16, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0, "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=patch,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
        cls = "Qwen3VLProcessor"
    else:
        from transformers import Qwen2_5_VLConfig

        text |= dict(rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=patch,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
        cls = "Qwen2_5_VLProcessor"
    ip = Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=48 * 48, patch_size=patch, merge_size=2, temporal_patch_size=2)
    return save_checkpoint(path, _build(cfg, seed), ip, tok, cls, QWEN_TEMPLATE)


def build_tiny_qwen2_5_vl(path, **kw) -> Path:
    return build_tiny_qwen_vl(path, version="2.5", **kw)


def build_tiny_qwen3_vl(path, **kw) -> Path:
    return build_tiny_qwen_vl(path, version="3", **kw)


def build_tiny_idefics3(path, hidden=64, layers=2, seed=0, init_range=0.02, smolvlm=False) -> Path:
    """Photos longer than 32 px are split into 32-px tiles plus a global view; 4 tokens per tile."""
    from transformers import Idefics3Config, Idefics3ImageProcessorPil, SmolVLMConfig, SmolVLMImageProcessorPil

    from .hf_idefics3 import IDEFICS3_TEMPLATE

    rows = [f"<row_{i}_col_{j}>" for i in range(1, 3) for j in range(1, 3)]
    special = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>", *rows]
    tok = byte_level_tokenizer(special, unk_token=None, bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    Config, IP = (SmolVLMConfig, SmolVLMImageProcessorPil) if smolvlm else (Idefics3Config, Idefics3ImageProcessorPil)
    cfg = Config(text_config=dict(model_type="llama", **_text_config(tok, hidden, layers, init_range)), vision_config=vision,
                 image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2, tie_word_embeddings=False)
    ip = IP(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    cls = "SmolVLMProcessor" if smolvlm else "Idefics3Processor"
    return save_checkpoint(path, _build(cfg, seed), ip, tok, cls, IDEFICS3_TEMPLATE, image_seq_len=4)


def build_tiny_smolvlm(path, **kw) -> Path:
    return build_tiny_idefics3(path, smolvlm=True, **kw)


def build_tiny_gemma3(path, hidden=64, layers=2, seed=0, init_range=0.02) -> Path:
    """Tied embeddings scaled by sqrt(hidden); a local (sliding) and a global layer; 4 soft tokens per photo."""
    from transformers import Gemma3Config, Gemma3ImageProcessorPil

    from .hf_gemma3 import GEMMA3_TEMPLATE

    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = byte_level_tokenizer(special, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                     extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    text = _text_config(tok, hidden, layers, init_range, tie=True)
    text |= dict(head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"][:layers] if layers <= 2 else None,
                 query_pre_attn_scalar=16)
    vision = dict(model_type="siglip_vision_model", **_VISION_CLIP)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
                       eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)
    ip = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    return save_checkpoint(path, _build(cfg, seed), ip, tok, "Gemma3Processor", GEMMA3_TEMPLATE, image_seq_length=4)


def build_tiny_internvl(path, hidden=64, layers=2, seed=0, init_range=0.02) -> Path:
    """32-px tiles (up to 4, + a thumbnail), 4 ``<IMG_CONTEXT>`` tokens per tile after pixel shuffle."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig

    from .hf_internvl import INTERNVL_TEMPLATE

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = byte_level_tokenizer(special, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                     extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=[32, 32], patch_size=[8, 8])
    cfg = InternVLConfig(text_config=dict(model_type="qwen2", **_text_config(tok, hidden, layers, init_range)), vision_config=vision,
                         image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5, tie_word_embeddings=False)
    ip = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=4)
    return save_checkpoint(path, _build(cfg, seed), ip, tok, "InternVLProcessor", INTERNVL_TEMPLATE, image_seq_length=4)


def build_tiny_janus(path, hidden=64, layers=2, seed=0, init_range=0.02) -> Path:
    """A unified model that reads and writes 32-px photos: SigLIP-style tower (16 soft tokens) and a VQ image tokenizer
    with a 64-code book on a 4x4 grid (16 codes per image); Janus-Pro's layout at a tiny size."""
    from transformers import JanusConfig, JanusImageProcessorPil

    from .hf_janus import JANUS_TEMPLATE

    special = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"]
    tok = byte_level_tokenizer(special, unk_token=None, bos_token=special[0], eos_token=special[1], pad_token=special[2],
                               extra_special_tokens={"image_token": special[3], "boi_token": special[4], "eoi_token": special[5]})
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                  projection_dim=hidden, depth=2, num_image_tokens=16, mlp_ratio=2.0)
    vq = dict(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 1, 1], num_res_blocks=1,
              projection_dim=hidden, image_token_embed_dim=hidden, num_hidden_layers=2)
    cfg = JanusConfig(text_config=dict(model_type="llama", **_text_config(tok, hidden, layers, init_range)), vision_config=vision,
                      vq_config=vq, image_token_id=tok.convert_tokens_to_ids(special[3]), tie_word_embeddings=False)
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # unit-gain photo paths in and out, as _build gives the other families (std 0.02 makes
        # every photo look alike to the decoder, and every code equally likely to the generation head)
        for name, p in model.named_parameters():
            if p.dim() == 2 and ("vision_model" in name or "aligner" in name or "generation" in name) and "position" not in name:
                p.normal_(0.0, init_range if "generation_embeddings" in name else p[0].numel() ** -0.5)
    model.generation_config.generation_kwargs = {"boi_token_id": tok.convert_tokens_to_ids(special[4])}
    model.generation_config.guidance_scale = 5.0
    ip = JanusImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return save_checkpoint(path, model, ip, tok, "JanusProcessor", JANUS_TEMPLATE, num_image_tokens=16)




def build_tiny_emu3(path, hidden=64, layers=2, seed=0, init_range=0.02) -> Path:
    """A unified model whose photos are vocabulary tokens: a VQ tokenizer with a 64-code book makes a 32-px photo a 4x4
    grid of ``<|visual token NNNNNN|>`` tokens (+ an end-of-line token per row); Emu3's layout at a tiny size."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration, Emu3ImageProcessor

    from .hf_emu3 import EMU3_TEMPLATE

    visual = [f"<|visual token {i:06d}|>" for i in range(64)]
    named = {"image_token": "<image>", "boi_token": "<|image start|>", "eoi_token": "<|image end|>",
             "image_wrapper_token": "<|image token|>", "eof_token": "<|extra_201|>"}
    special = ["<|endoftext|>", "<|extra_203|>", "<|extra_204|>", *named.values(), "<|extra_200|>", *visual]
    tok = byte_level_tokenizer(special, vocab_size=700, unk_token=None, bos_token="<|extra_203|>", eos_token="<|extra_204|>",
                               pad_token="<|endoftext|>", extra_special_tokens=named)
    text = _text_config(tok, hidden, layers, init_range)
    text.pop("tie_word_embeddings")
    vq = dict(codebook_size=64, embed_dim=4, latent_channels=4, base_channels=32, channel_multiplier=[1, 1, 1, 1], num_res_blocks=1,
              attn_resolutions=[], hidden_size=32, num_attention_heads=1, temporal_downsample_factor=4)
    cfg = Emu3Config(text_config=text, vq_config=vq, vocabulary_map={t: tok.convert_tokens_to_ids(t) for t in special},
                     tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Emu3ForConditionalGeneration(cfg).eval()
    ip = Emu3ImageProcessor(min_pixels=32 * 32, max_pixels=32 * 32, spatial_factor=8)
    return save_checkpoint(path, model, ip, tok, "Emu3Processor", EMU3_TEMPLATE)


#: model_type -> builder of a tiny random checkpoint of that family (tests, benchmarks, ``yollava models``)
TINY_BUILDERS = {
    "llava": build_tiny_llava,
    "llava_next": build_tiny_llava_next,
    "llava_onevision": build_tiny_llava_onevision,
    "qwen2_vl": build_tiny_qwen2_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "qwen3_vl": build_tiny_qwen3_vl,
    "idefics3": build_tiny_idefics3,
    "smolvlm": build_tiny_smolvlm,
    "gemma3": build_tiny_gemma3,
    "internvl": build_tiny_internvl,
    "janus": build_tiny_janus,
    "emu3": build_tiny_emu3,
}

