"""A local CLIP / DINO checkpoint as the image embedder (``yollava eval generation --embedder``), on tiny random configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from yollava.vision.hf_embedder import HFImageEmbedder

pytestmark = pytest.mark.usefixtures("one_thread")


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from transformers import BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("embedders")
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                                       num_attention_heads=2, vocab_size=99), projection_dim=16))
    clip.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(**vision)).save_pretrained(root / "dino")
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "dino")
    return root


@pytest.mark.parametrize("kind, dim", [("clip", 16), ("dino", 32)])
def test_embeds_photos_deterministically_with_a_fingerprint(checkpoints, kind, dim):
    e = HFImageEmbedder(checkpoints / kind)
    v = e.embed(_images())
    assert v.shape == (3, dim) and torch.isfinite(v).all()
    assert torch.equal(v, e.embed(_images()))
    assert not torch.allclose(v[0], v[1])  # different photos, different vectors
    assert e.fingerprint.startswith(f"hf-image:{'clip' if kind == 'clip' else 'dinov2'}:{kind}:")


def test_a_folder_without_an_image_model_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="cannot load an image embedder"):
        HFImageEmbedder(tmp_path / "nothing-here")


def test_generation_command_takes_the_embedder(tmp_path):
    from typer.testing import CliRunner

    from yollava.cli.main import app

    r = CliRunner().invoke(app, ["eval", "generation", "--model", "x", "--out", str(tmp_path / "o.json"), "--embedder", str(tmp_path / "none")])
    assert r.exit_code != 0 and "cannot load an image embedder" in r.output
