"""The ``pocket`` adapter: the embedded default VLM behind the common :class:`VLMAdapter` interface."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ...runtime import native_bf16
from ..base import EncodedImage, Message, VLMAdapter
from ..hf_common import decoder_forward
from .llm import load_llm
from .model import PocketConfig, PocketVLM

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
V1_WEIGHTS_DIR = WEIGHTS_DIR / "v1"  # pocket v1 (``--model pocket-v1``)
WEIGHTS_JSON = "pocket.json"
SYSTEM_PROMPT = "You are a helpful assistant."
RANDOM_SEED = 0


class Int8Linear(nn.Module):
    """A frozen Linear with int8 weights (one scale per output row) and bf16 activations in the matmul."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp_min(1e-8) / 127.0
        self.register_buffer("weight", torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = torch._weight_int8pack_mm(flat, self.weight, self.scales).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Bf16Linear(nn.Module):
    """A frozen Linear whose matmul runs in bf16 (weights stored in bf16, the input cast on the way in) and whose
    output is cast back to the input's precision: on CPUs with AVX-512 BF16 / AMX about 4x an fp32 matmul, while
    what surrounds it stays fp32. Gradients flow to the input (the weights are buffers, never trained)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.out_features = linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return out if self.bias is None else out + self.bias


class PocketAdapter(VLMAdapter):
    family = "pocket"

    def __init__(self, model: PocketVLM, tokenizer, model_id: str = "pocket", generation: str | None = None):
        super().__init__(model, tokenizer, model_id)
        ids = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
        self._vision_start, self._image_pad, self._vision_end = ids
        self._int8: tuple[nn.Module, nn.Module] | None = None
        self._bf16: tuple[nn.Module, nn.Module] | None = None
        self.set_generation(generation or os.environ.get("YOLLAVA_GENERATION") or self.default_generation())

    # ---- generation runtime ----------------------------------------------------------------
    def default_generation(self) -> str:
        """int8 on a CPU (about 5x the tokens per second of fp32 there, README "Speed"); fp32 elsewhere (the
        int8 kernel, ``_weight_int8pack_mm``, is a CPU one)."""
        return "int8" if self.device.type == "cpu" else "fp32"

    def set_generation(self, runtime: str) -> None:
        """``"fp32"``: generate with the model itself; ``"int8"``: with an int8 copy (see below), made on the
        first answer generated with it (training, scoring and synthesis never need it)."""
        if runtime not in ("fp32", "int8"):
            raise ValueError(f"pocket generation runtime must be 'fp32' or 'int8', not {runtime!r}")
        self._generation = runtime
        if runtime == "fp32":
            self._int8 = None

    def use_exact_generation(self) -> None:
        self.set_generation("fp32")

    def prepare_generation(self) -> None:
        self.generation_modules()  # makes the int8 copy when chat uses it

    def _copy_with_linears(self, make: Callable[[nn.Linear], nn.Module]) -> tuple[nn.Module, nn.Module]:
        """A copy of the frozen decoder (without its embedding table: inputs come as embeddings) with every Linear
        replaced by ``make(linear)``, and ``make(lm_head)``. Every other tensor (norms, rotary buffers) is shared
        with the model, not copied (no 1.4 GB copy), and the model itself is never changed."""
        import copy

        llm = self.model.llm
        embed, llm.model.embed_tokens = llm.model.embed_tokens, None
        try:
            decoder = copy.deepcopy(llm.model, memo={id(t): t for t in [*llm.model.parameters(), *llm.model.buffers()]})
        finally:
            llm.model.embed_tokens = embed
        for module in list(decoder.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, name, make(child))
        return decoder.eval(), make(llm.lm_head).eval()

    @staticmethod
    def _runner(modules: tuple[nn.Module, nn.Module]):
        """``(decoder function, lm_head)`` of a copy made by :meth:`_copy_with_linears`."""
        decoder, head = modules

        def run(inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
            return decoder_forward(decoder, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)

        return run, head

    def _enable_int8_generation(self) -> None:
        """Generate with an int8 copy of the frozen LLM: every Linear, the output layer included, keeps its
        weights as int8 with one scale per output row and multiplies them with bf16 activations (weight-only
        quantisation, torch's ``_weight_int8pack_mm`` kernel; int8 activations, as torch's dynamic
        quantisation does, lose too much on Qwen's outlier channels). On a CPU one decoding step is bound by
        reading the weights, and int8 reads a quarter of the bytes. Training, recognition scores and the
        fingerprint stay fp32."""
        self._int8 = self._copy_with_linears(Int8Linear)

    def generation_modules(self, exact: bool = False):
        if exact or self._generation == "fp32" or self.device.type != "cpu":  # (the int8 kernel is a CPU one)
            return self.decoder, self.lm_head
        if self._int8 is None:
            self._enable_int8_generation()
        return self._runner(self._int8)

    @property
    def generation_runtime(self) -> str:
        return self._generation

    # ---- training runtime ------------------------------------------------------------------
    def fast_training_precision(self) -> str | None:
        """bf16 where the hardware multiplies it natively (AVX-512 BF16 / AMX CPUs, recent GPUs): a training step
        there is about 3x faster than fp32 (README "Speed"); elsewhere the model's own fp32."""
        return "bf16" if native_bf16(self.device) else None

    def training_modules(self, precision: str | None = None):
        """``"bf16"``: a copy of the frozen LLM whose Linear layers, the output layer included, multiply in bf16
        (:class:`Bf16Linear`; made on first use, kept; the fp32 model is untouched). Everything between the
        matmuls stays fp32: the residual stream, norms, rotary positions and attention, so the loss and the
        concept's gradients match fp32's closely (cosine 1.000 on a batch of ``<bo>``) and the rows, their
        gradients and AdamW stay fp32. (A copy converted to bf16 whole, residual stream too, matched fp32's gradients
        less closely, cosine 0.998, and was no better on the dev subjects: ``recipe_dev/bf16.md``.)"""
        if precision != "bf16":
            return super().training_modules(precision)
        return self._runner(self.bf16_copy())

    def bf16_copy(self) -> tuple[nn.Module, nn.Module]:
        """The bf16 training copy itself, ``(decoder, output layer)``, made on first use: for code that extends it
        (pocket's own training wraps its Linear layers in a LoRA, :mod:`.training.lora`)."""
        if self._bf16 is None:
            self._bf16 = self._copy_with_linears(Bf16Linear)
        return self._bf16

    # ---- the parts -------------------------------------------------------------------------
    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.llm.model.embed_tokens

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.llm.lm_head

    @property
    def image_token_id(self) -> int:
        return self._image_pad

    @property
    def image_token_ids(self) -> list[int]:
        n = self.model.config.n_visual_tokens
        return [self._vision_start] + [self._image_pad] * n + [self._vision_end]

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> list[EncodedImage]:
        if not images:
            return []
        feats = self.model.visual_tokens(self.model.pooled_features(images))
        return [EncodedImage(features=f, token_ids=self.image_token_ids) for f in feats]

    def decoder(self, inputs_embeds, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return decoder_forward(self.model.llm.model, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        if not messages or messages[0].role != "system":
            messages = [Message("system", SYSTEM_PROMPT), *messages]
        parts = []
        for m in messages:
            content = f"{self.image_marker}\n{m.content}" if m.has_image else m.content
            parts.append(f"<|im_start|>{m.role}\n{content}<|im_end|>\n")
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    @property
    def end_of_turn(self) -> str:
        return "<|im_end|>"

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()  # its weights_sha256 samples 16 values per tensor
        fp["pocket_weights_sha256"] = self.weights_sha256()  # the whole projector + the LoRA file
        fp["pocket_version"] = self.model.config.version
        return fp

    def weights_sha256(self) -> str:
        """Hash of the projector as it is now and of the LoRA merged at load time."""
        h = hashlib.sha256(self.model.config.weights_sha256.encode())  # the LoRA part (file hash)
        for k, v in sorted(self.model.projector.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().to(torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# ---- shipped weights: projector + LoRA, one safetensors file and one JSON ------------------
def save_pocket_weights(
    folder: str | Path, projector: dict[str, torch.Tensor], lora: dict[str, torch.Tensor] | None, meta: dict
) -> Path:
    """``lora`` maps ``<module path in the LLM>.A`` (r, in) / ``.B`` (out, r) to tensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"projector.{k}": v for k, v in projector.items()}
    tensors.update({f"lora.{k}": v for k, v in (lora or {}).items()})
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    save_file(tensors, folder / "pocket.safetensors")
    (folder / WEIGHTS_JSON).write_text(json.dumps({"file": "pocket.safetensors", "dtype": "float16", **meta}, indent=2))
    return folder


def merge_lora(llm: nn.Module, lora: dict[str, torch.Tensor], scale: float) -> int:
    """W += scale * B @ A for every LoRA pair; returns the number of merged modules."""
    names = sorted({k.rsplit(".", 1)[0] for k in lora})
    for name in names:
        linear = llm.get_submodule(name)
        a, b = lora[f"{name}.A"].float(), lora[f"{name}.B"].float()
        with torch.no_grad():
            linear.weight += scale * (b @ a)
    return len(names)


def load_pocket(name: str = "pocket", weights_dir: str | Path | None = None, progress: bool = True, generation: str | None = None,
                **kwargs) -> PocketAdapter:
    """The embedded default VLM. ``weights_dir`` (or ``YOLLAVA_POCKET_WEIGHTS``) overrides the shipped weights;
    ``generation`` (or ``YOLLAVA_GENERATION``): ``"int8"`` (default on a CPU) or ``"fp32"`` weights for generating text."""
    weights_dir = Path(weights_dir or os.environ.get("YOLLAVA_POCKET_WEIGHTS") or WEIGHTS_DIR)
    llm, tokenizer = load_llm(progress=progress)
    meta_path = weights_dir / WEIGHTS_JSON
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    config = PocketConfig(grid=meta["grid"], version=meta.get("version", 1)) if meta else PocketConfig()
    if meta is None:
        log.warning("no trained pocket weights in %s: the projector is random (seed %d); it cannot see", weights_dir, RANDOM_SEED)
        with torch.random.fork_rng():
            torch.manual_seed(RANDOM_SEED)
            model = PocketVLM(llm, config)
        config.weights_sha256 = "random-seed-%d" % RANDOM_SEED
    else:
        model = PocketVLM(llm, config)
        file = weights_dir / meta["file"]
        config.weights_sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
        tensors = load_file(file)
        projector = {k.removeprefix("projector."): v.float() for k, v in tensors.items() if k.startswith("projector.")}
        model.projector.load_state_dict(projector)
        lora = {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}
        if lora:
            merge_lora(llm, lora, meta["lora"]["alpha"] / meta["lora"]["r"])
    return PocketAdapter(model, tokenizer, model_id=name, generation=generation)
