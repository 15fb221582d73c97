"""A LoRA on pocket's bf16 training copy: train the LLM's adapters at bf16 speed, ship them merged into fp32.

PEFT wraps ``nn.Linear``; the bf16 copy's layers are :class:`~..adapter.Bf16Linear` (bf16 weights as buffers), so the
pair lives here: ``y = base(x) + scale * B(A(x))`` with A and B in fp32 (B starts at zero, so training starts from the
frozen model exactly). :func:`lora_tensors` names the pairs as :func:`~..adapter.save_pocket_weights` stores them and
:func:`~..adapter.merge_lora` merges them into the fp32 LLM at load time.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        out_features, in_features = base.weight.shape
        self.base, self.scale = base, alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as PEFT
        self.B = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale


def add_lora(decoder: nn.Module, rank: int, alpha: float, targets=ALL_LINEAR) -> dict[str, LoraLinear]:
    """Wrap ``decoder``'s Linear layers named in ``targets`` (in place); returns ``{module path: LoraLinear}``."""
    wrapped = {}
    for path, module in list(decoder.named_modules()):
        for name, child in list(module.named_children()):
            if name in targets and not isinstance(child, LoraLinear):
                lora = LoraLinear(child, rank, alpha)
                setattr(module, name, lora)
                wrapped[f"{path}.{name}" if path else name] = lora
    if not wrapped:
        raise ValueError(f"no layer named {targets} in the decoder")
    return wrapped


def lora_tensors(wrapped: dict[str, LoraLinear], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """``{"<path in the LLM>.A": (r, in), ".B": (out, r)}``; the bf16 copy is the LLM's ``model`` part, hence ``prefix``."""
    out = {}
    for path, lora in wrapped.items():
        out[f"{prefix}{path}.A"] = lora.A.detach().clone()
        out[f"{prefix}{path}.B"] = lora.B.detach().clone()
    return out


def load_lora_tensors(wrapped: dict[str, LoraLinear], tensors: dict[str, torch.Tensor], prefix: str = "model.") -> None:
    with torch.no_grad():
        for path, lora in wrapped.items():
            lora.A.copy_(tensors[f"{prefix}{path}.A"])
            lora.B.copy_(tensors[f"{prefix}{path}.B"])
