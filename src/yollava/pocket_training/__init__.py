"""Teaching ``pocket`` to see: the data, samples, loss, training loop and held-out evaluation of its projector
(and of a LoRA on its LLM). ``scripts/pocket/`` only parses arguments and calls these; see its README.

- :mod:`.data`: the pool, its fixed split by hashed names, facts from pixels (colours), cached vision features;
- :mod:`.samples`: stage 1 (captions, colours) and stage 2 (presence, categories, naming, colours) samples;
- :mod:`.loop`: the loss (the engine's :meth:`~yollava.engine.Engine.loss`), the AdamW loop, stage 0 word
  alignment, the LoRA, and the stages, each writing into an output folder the caller names;
- :mod:`.evaluate`: naming / presence / yes-no / colour metrics on held-out photos.
"""

from .data import default_pool, default_work_dir, list_pool, load_features, prepare_feature_maps, prepare_features
from .views import load_views, prepare_views
from .loop import (LORA_TARGETS, PocketLoss, add_lora, lora_state, output_folder, random_pocket, train, train_stage1, train_stage2,
                   word_alignment)
from .samples import Sample, stage1_samples, stage2_samples

__all__ = [
    "LORA_TARGETS", "PocketLoss", "Sample", "add_lora", "default_pool", "default_work_dir", "list_pool", "load_features", "load_views", "prepare_feature_maps", "prepare_views",
    "lora_state", "output_folder", "prepare_features", "random_pocket", "stage1_samples", "stage2_samples", "train", "train_stage1",
    "train_stage2", "word_alignment",
]
