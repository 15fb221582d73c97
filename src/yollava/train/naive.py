"""The straightforward recipe, as the official Yo'LLaVA code does it; the yardstick for the fast path.

Whole input-embedding and output matrices (grown by the concept's rows) in AdamW, untouched rows
restored after every step, batch size 1, each photo re-encoded at every step, logits over the whole
sequence. Learns the same thing as :class:`~yollava.train.ConceptTrainer` (the concept rows get the
same gradients; AdamW is element-wise and weight decay is 0), only slower. Used by
``benchmarks/train_speed.py``; not meant for users.
"""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F

from ..engine import Engine
from ..images import load_image
from ..data.samples import Sample


class NaiveTrainer:
    def __init__(self, engine: Engine, name: str, k: int = 16, lr: float = 1e-3, seed: int = 0):
        self.engine, self.name = engine, name
        a = engine.adapter
        concept = engine.new_concept(name, k, seed=seed) if name not in engine.bank else engine.bank[name]
        self.vocab = a.vocab_size
        n_new = concept.k + 1
        latent_out = a.lm_head.weight.detach().mean(0, keepdim=True).expand(concept.k, -1)
        self.w_in = torch.nn.Parameter(torch.cat([a.embed_tokens.weight.detach(), concept.input_rows.detach()]))
        self.w_out = torch.nn.Parameter(torch.cat([a.lm_head.weight.detach(), concept.output_row.detach()[None], latent_out]))
        self.frozen_in, self.frozen_out = a.embed_tokens.weight.detach().clone(), a.lm_head.weight.detach().clone()
        self.latent_cols = torch.arange(self.vocab + 1, self.vocab + n_new)
        self.opt = torch.optim.AdamW([self.w_in, self.w_out], lr=lr, weight_decay=0.0)
        self.rng = random.Random(seed)
        self.seed = seed

    def step_loss(self, sample: Sample) -> torch.Tensor:
        e, a = self.engine, self.engine.adapter
        image = None if sample.image is None else a.encode_images([load_image(sample.image)])[0]  # no feature cache
        enc = e.encode(sample.question, answer=sample.answer, concepts=[self.name])
        if image is not None:  # re-tokenise with the freshly encoded photo
            e_img = e.encode(sample.question, image=sample.image, answer=sample.answer, concepts=[self.name])
            enc = type(enc)(e_img.input_ids, e_img.answer_mask, [image], e_img.prefix_len)
        ids = torch.tensor([enc.input_ids])
        embeds = F.embedding(ids, self.w_in)
        if image is not None:
            embeds = embeds.masked_scatter((ids == a.image_token_id).unsqueeze(-1), image.features.to(embeds.dtype))
        hidden, _ = a.decoder(embeds)
        logits = hidden @ self.w_out.T  # every position, every column
        logits[..., self.latent_cols] = float("-inf")
        labels = ids.masked_fill(~torch.tensor([enc.answer_mask]), -100)
        return F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)

    def train(self, samples: list[Sample], max_samples: int | None = None) -> dict:
        """One pass (or ``max_samples`` steps) at batch size 1; returns timing."""
        order = list(range(len(samples)))
        random.Random(self.seed).shuffle(order)
        order = order[:max_samples] if max_samples else order
        t0, losses = time.perf_counter(), []
        for i in order:
            loss = self.step_loss(samples[i])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            with torch.no_grad():  # the official code's row restore
                self.w_in[: self.vocab].copy_(self.frozen_in)
                self.w_out[: self.vocab].copy_(self.frozen_out)
            losses.append(loss.item())
        self.sync_concept()
        return {"samples": len(order), "seconds": time.perf_counter() - t0, "losses": losses}

    def sync_concept(self) -> None:
        """Copy the learned rows into the engine's concept so recognition can be measured."""
        c = self.engine.bank[self.name]
        with torch.no_grad():
            c.input_rows.copy_(self.w_in[self.vocab :])
            c.output_row.copy_(self.w_out[self.vocab])
