"""The default model, ``pocket``, in the quick run: it names what is in real photos.

Loads the real model (the LLM's safetensors cache, built once on first use: about 90 s; later about 10 s) and
runs one batch of six photos through it. The slow tests in ``test_pocket.py`` cover the rest."""

from __future__ import annotations

import pytest
import torch

from yollava.paths import default_data_root

#: ImageNet pool photo (``pool/imagenet/<wnid>_<class>.jpg``) -> the word for what is in it
PHOTOS = {"golden_retriever": "dog", "tabby": "cat", "sports_car": "car", "goldfish": "fish", "pizza": "pizza", "airliner": "airplane"}
QUESTION = "What is in this photo? Answer with a single word or phrase."


@pytest.fixture(scope="module")
def photos():
    root = default_data_root() / "pool" / "imagenet"
    found = {cls: next(root.glob(f"*_{cls}.jpg"), None) for cls in PHOTOS}
    if not all(found.values()):
        pytest.skip(f"needs the shared ImageNet pool photos in {root}")
    return found


@torch.no_grad()
def test_pocket_names_what_is_in_real_photos(photos):
    from yollava import YoLLaVA

    engine = YoLLaVA.from_pretrained("pocket")
    tok = engine.adapter.tokenizer
    words = list(dict.fromkeys(PHOTOS.values()))
    # each word's first token, as written and capitalised ("dog", "Dog"); the six words start with distinct tokens
    ids = [sorted({tok(v, add_special_tokens=False)["input_ids"][0] for v in (w, w.capitalize())}) for w in words]
    assert len({i for group in ids for i in group}) == sum(map(len, ids))
    probs = engine.first_token_probabilities([engine.encode(QUESTION, image=photos[cls]) for cls in PHOTOS])
    named = [words[int(torch.stack([p[g].sum() for g in ids]).argmax())] for p in probs]
    right = [n == PHOTOS[cls] for n, cls in zip(named, PHOTOS)]
    # measured: 6 of 6 (a projector that does not see gives chance, 1 in 6)
    assert sum(right) >= 5, dict(zip(PHOTOS, named))
