"""Held-out quality of the pocket VLM, beside chance. Uses only photos never trained on.

* naming: 50-way, by ranking the likelihood of "{Class}<|im_end|>" after "What is in this photo?
  Answer with a single word or phrase."; top-1 / top-5, for held-out photos of classes seen in
  training and for classes never seen (chance 0.02 / 0.10);
* presence: "Can you see if a {class} is in this photo? ..." for the true class, the most similar
  other class (hard negative, by feature centroids) and a random class; P(yes) vs P(no);
* generic yes/no ("Is this an animal?", "Is there a dog in this photo?", ...), balanced;
* main colour: 11-way ranking of the colour names, against the colour computed from the pixels.

Moved here from ``scripts/pocket/evaluate.py`` (prompts are now tokenised by the engine).
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ..engine import Engine
from ..models.base import EncodedImage, Message
from .data import (ANIMAL_ONLY_NEGATIVES, CATEGORIES, COLOURS, article, cap, class_similarity, class_sources,
                   hard_negatives, main_colour)

NAME_Q = "What is in this photo? Answer with a single word or phrase."
PRESENCE_Q = "Can you see if {a} is in this photo? Answer with a single word or phrase."
COLOUR_Q = "What is the main colour in this photo?"
NOT_ANIMAL = {"Garfield", "Snoopy", "brontosaurus toy", "stegosaurus toy", "face"}


class Scorer:
    def __init__(self, adapter, pooled):
        self.a, self.pooled, self.engine = adapter, pooled, Engine(adapter)
        tok = adapter.tokenizer
        first = lambda words: sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in words})  # noqa: E731
        self.yes, self.no = first(["Yes", "yes", " Yes"]), first(["No", "no", " No"])

    def images(self, idx: int | tuple[int, ...]) -> list[EncodedImage]:
        rows = [idx] if isinstance(idx, int) else list(idx)
        visual = self.a.model.projector(self.pooled[rows].float())
        return [EncodedImage(features=v, token_ids=self.a.image_token_ids) for v in visual]

    def prompt(self, idx: int | tuple[int, ...], question: str) -> torch.Tensor:
        """Input embeddings of the whole prompt (system prefix included) for one photo (a row of the table) or several
        in order (a tuple of rows), tokenised by the engine."""
        images = self.images(idx)
        marker = self.a.image_marker
        rendered = self.a.render([Message("user", "".join(f"{marker}\n" for _ in images) + question)])
        enc = self.engine.model.encoded(self.engine.bank, rendered, images)
        ids = torch.tensor([enc.input_ids])
        emb = self.a.embed_tokens(ids)
        visual = torch.cat([img.features for img in images])[None]
        return emb.masked_scatter((ids == self.a.image_token_id).unsqueeze(-1), visual), ids.shape[1]

    @torch.no_grad()
    def answer(self, idx: int, question: str, max_new_tokens: int = 60) -> str:
        """The model's greedy answer about one photo (the product's own chat path)."""
        return self.engine.chat(question, image=self.images(idx)[0], max_new_tokens=max_new_tokens)

    @torch.no_grad()
    def p_yes(self, items: list[tuple[int, str]], batch_size: int = 8) -> list[float]:
        out = []
        for i in range(0, len(items), batch_size):
            embs = [self.prompt(idx, q) for idx, q in items[i : i + batch_size]]
            width = max(n for _, n in embs)
            x = torch.zeros(len(embs), width, embs[0][0].shape[-1])
            mask = torch.zeros(len(embs), width, dtype=torch.long)
            for j, (e, n) in enumerate(embs):
                x[j, :n], mask[j, :n] = e[0], 1
            hidden = self.a.decoder(x, attention_mask=mask)[0]
            last = hidden[torch.arange(len(embs)), mask.sum(1) - 1]
            probs = self.a.lm_head(last).float().softmax(-1)
            py, pn = probs[:, self.yes].sum(-1), probs[:, self.no].sum(-1)
            out += (py / (py + pn).clamp_min(1e-12)).tolist()
        return out

    @torch.no_grad()
    def rank(self, idx: int, question: str, answers: list[str]) -> np.ndarray:
        """Sum of log-probabilities of each answer (+ end of turn) after the prompt."""
        emb, n = self.prompt(idx, question)
        hidden, cache = self.a.decoder(emb, use_cache=True)
        cand = [self.a.tokenizer(t + self.a.end_of_turn, add_special_tokens=False)["input_ids"] for t in answers]
        width = max(map(len, cand))
        ids = torch.zeros(len(cand), width, dtype=torch.long)
        mask = torch.zeros(len(cand), width, dtype=torch.long)
        for j, c in enumerate(cand):
            ids[j, : len(c)], mask[j, : len(c)] = torch.tensor(c), 1
        cache.batch_repeat_interleave(len(cand))
        full = torch.cat([torch.ones(len(cand), n, dtype=torch.long), mask], 1)
        h2 = self.a.decoder(self.a.embed_tokens(ids), attention_mask=full, past_key_values=cache, use_cache=True)[0]
        h = torch.cat([hidden[:, -1:].expand(len(cand), 1, -1), h2[:, :-1]], 1)  # h[:, t] predicts ids[:, t]
        logp = F.log_softmax(self.a.lm_head(h[mask.bool()]).float(), -1)
        tok_lp = torch.zeros(len(cand), width)
        tok_lp[mask.bool()] = logp.gather(1, ids[mask.bool()][:, None])[:, 0]
        return tok_lp.sum(1).numpy()


def build_eval(feats, n: int, seed: int):
    rng = random.Random(seed)
    photos = feats["photos"]
    names, sim = class_similarity(feats, train_only=False)
    hard = hard_negatives(names, sim, 1, class_sources(photos))
    groups = {}
    for split in ("heldout_seen", "heldout_unseen"):
        by_class = defaultdict(list)
        for i, p in enumerate(photos):
            if p.split == split and p.name:
                by_class[p.name].append(i)
        classes = rng.sample(sorted(by_class), min(n, len(by_class)))
        groups[split] = [rng.choice(by_class[c]) for c in classes]
    held = [i for i, p in enumerate(photos) if p.split != "train"]
    cats = []
    for cat in CATEGORIES:
        pos = [i for i in held if cat in photos[i].categories]
        neg_pool = [i for i in held if photos[i].name and cat not in photos[i].categories
                    and (("animal" in photos[i].categories) if cat in ANIMAL_ONLY_NEGATIVES else True)
                    and not (cat == "animal" and photos[i].name in NOT_ANIMAL)]
        k = min(10, len(pos), len(neg_pool))
        cats += [(i, cat, True) for i in rng.sample(pos, k)] + [(i, cat, False) for i in rng.sample(neg_pool, k)]
    colour = [i for i in held if main_colour(feats["colours"][i])]
    colour = rng.sample(colour, min(n, len(colour)))
    return names, hard, groups, cats, colour


def evaluate(adapter, feats, names, hard, groups, cats, colour_ids, seed: int) -> dict:
    rng = random.Random(seed + 1)
    photos, sc, m = feats["photos"], Scorer(adapter, feats["pooled"]), {}
    for split, ids in groups.items():
        tag = "seen" if split == "heldout_seen" else "unseen"
        ranks = []
        for i in ids:
            true = photos[i].name
            others = rng.sample([c for c in names if c.lower() not in true.lower() and true.lower() not in c.lower()], 49)
            scores = sc.rank(i, NAME_Q, [cap(c) for c in [true] + others])
            ranks.append(int((scores > scores[0]).sum()))
        ranks = np.array(ranks)
        m[f"naming_{tag}_top1"], m[f"naming_{tag}_top5"] = (ranks < 1).mean(), (ranks < 5).mean()
        yes = sc.p_yes([(i, PRESENCE_Q.format(a=article(photos[i].name))) for i in ids])
        hard_no = sc.p_yes([(i, PRESENCE_Q.format(a=article(hard[photos[i].name][0]))) for i in ids])
        rand_names = [rng.choice([c for c in names if c.lower() not in photos[i].name.lower() and photos[i].name.lower() not in c.lower()]) for i in ids]
        rand_no = sc.p_yes([(i, PRESENCE_Q.format(a=article(c))) for i, c in zip(ids, rand_names)])
        yes, hard_no, rand_no = map(np.array, (yes, hard_no, rand_no))
        m[f"presence_{tag}_yes_acc"] = (yes >= 0.5).mean()
        m[f"presence_{tag}_hardneg_acc"] = (hard_no < 0.5).mean()
        m[f"presence_{tag}_randneg_acc"] = (rand_no < 0.5).mean()
        m[f"presence_{tag}_weighted_acc_hard"] = 0.5 * (yes >= 0.5).mean() + 0.5 * (hard_no < 0.5).mean()
        m[f"presence_{tag}_auc_hard"] = roc_auc_score([1] * len(yes) + [0] * len(hard_no), np.r_[yes, hard_no])
        m[f"presence_{tag}_mean_p_yes"] = float(np.r_[yes, hard_no, rand_no].mean())
    p = np.array(sc.p_yes([(i, CATEGORIES[c][0]) for i, c, _ in cats]))
    truth = np.array([y for _, _, y in cats])
    m["generic_yesno_acc"] = ((p >= 0.5) == truth).mean()
    m["generic_yesno_auc"] = roc_auc_score(truth, p)
    correct = []
    for i in colour_ids:
        scores = sc.rank(i, COLOUR_Q, [cap(c) for c in COLOURS])
        correct.append(COLOURS[int(scores.argmax())] == main_colour(feats["colours"][i]))
    m["colour_top1"] = float(np.mean(correct))
    return {k: float(v) for k, v in m.items()}


def check_cached_features(adapter, feats, ids):
    """The cached pooled features must give what the adapter computes from the photo itself."""
    from yollava.images import load_image

    enc = adapter.encode_images([load_image(feats["photos"][i].path) for i in ids])
    with torch.no_grad():
        cached = adapter.model.projector(feats["pooled"][ids].float())
    diff = max((e.features - c).abs().max().item() for e, c in zip(enc, cached))
    assert diff < 1e-3, f"cached features differ from encode_images by {diff}"


CHANCE = {"naming_seen_top1": 0.02, "naming_seen_top5": 0.10, "naming_unseen_top1": 0.02, "naming_unseen_top5": 0.10,
          "generic_yesno_acc": 0.5, "generic_yesno_auc": 0.5, "colour_top1": 1 / 11}
for t in ("seen", "unseen"):
    CHANCE.update({f"presence_{t}_weighted_acc_hard": 0.5, f"presence_{t}_auc_hard": 0.5})


SAME_Q = "Is the object in the second photo the same one as in the first? Answer with a single word or phrase."
WHERE_Q = "Where is the {name} in this photo: on the left or on the right? Answer with a single word or phrase."


def evaluate_views(adapter, feats, views, seed: int) -> dict:
    """Instance matching on held-out pairs (two views of one photo vs a view of another photo of the same class, or the
    nearest photo for one-photo classes): P(yes) to :data:`SAME_Q`, AUC and accuracy at 0.5 (balanced); where on a
    held-out collage (left / right by likelihood; chance 0.50)."""
    offset = len(feats["photos"])
    table = torch.cat([feats["pooled"], views["pooled"]])
    sc, m = Scorer(adapter, table), {}
    row = lambda k, role: offset + views["row_of"][k, role]  # noqa: E731
    for split, tag in (("heldout_seen", "seen"), ("heldout_unseen", "unseen")):
        ks = [k for k, v in enumerate(views["plan"]) if v["kind"] == "pair" and v["split"] == split]
        if not ks:
            continue
        same = np.array(sc.p_yes([((row(k, "view0"), row(k, "view1")), SAME_Q) for k in ks]))
        diff = np.array(sc.p_yes([((row(k, "view0"), row(k, "other")), SAME_Q) for k in ks]))
        m[f"instance_{tag}_weighted_acc"] = 0.5 * (same >= 0.5).mean() + 0.5 * (diff < 0.5).mean()
        m[f"instance_{tag}_auc"] = roc_auc_score([1] * len(ks) + [0] * len(ks), np.r_[same, diff])
    ks = [k for k, v in enumerate(views["plan"]) if v["kind"] == "collage" and v["split"] == "heldout_seen"]
    rng, correct = random.Random(seed + 2), []
    for k in ks:
        side = rng.choice(["left", "right"])
        name = feats["photos"][views["plan"][k][side]].name
        scores = sc.rank(row(k, "collage"), WHERE_Q.format(name=name), ["Left", "Right"])
        correct.append(["left", "right"][int(scores.argmax())] == side)
    if correct:
        m["where_collage_acc"] = float(np.mean(correct))
    return {k: float(v) for k, v in m.items()}


def sample_answers(adapter, feats, seed: int, n: int = 5) -> list[dict]:
    """Unedited greedy answers on held-out photos: "What is in this photo?" and "Describe this photo." on ``n`` held-out
    photos of seen classes, "What is the dog doing?" on up to ``n`` held-out dog photos; each with the class and the
    photo's main colours, and whether the answer names the class (a word of its name) and a colour."""
    rng = random.Random(seed + 3)
    photos, sc = feats["photos"], Scorer(adapter, feats["pooled"])
    seen = [i for i, p in enumerate(photos) if p.split == "heldout_seen" and p.name]
    dogs = [i for i, p in enumerate(photos) if p.split != "train" and "dog" in p.categories]
    picks = rng.sample(seen, n)
    out = []
    for question, ids in (("What is in this photo?", picks), ("Describe this photo.", picks),
                          ("What is the dog doing?", rng.sample(dogs, min(n, len(dogs))))):
        for i in ids:
            answer = sc.answer(i, question)
            colours = [COLOURS[j] for j in np.argsort(-feats["colours"][i])[:2]]
            words = [w for w in photos[i].name.lower().replace("-", " ").split() if len(w) > 2]
            out.append({"question": question, "photo": str(photos[i].path.name), "class": photos[i].name, "answer": answer,
                        "names_class": any(w.rstrip("s") in answer.lower() for w in words),
                        "names_colour": any(c in answer.lower() for c in COLOURS), "main_colours": colours})
    return out
for t in ("seen", "unseen"):
    CHANCE.update({f"instance_{t}_weighted_acc": 0.5, f"instance_{t}_auc": 0.5})
CHANCE["where_collage_acc"] = 0.5
