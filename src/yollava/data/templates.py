"""The paper's question/answer templates (Yo'LLaVA appendix F-G), stored as JSON in ``templates/``.

Recognition templates use the placeholder ``<sks>``; conversation-synthesis questions name the
subject "Riley" (people, Table 18) or "this subject" (objects and pets, Table 19). The base model is
asked those questions with the photo, and the subject's name is then swapped for the identifier.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from ..concepts.concept import validate_name
from ..prompts import RECOGNITION_QUERY

TEMPLATE_DIR = Path(__file__).with_name("templates")
PLACEHOLDER = "<sks>"


#: short recognition questions answered with exactly "Yes" or "No": the product's query first (it is what
#: ``recognize`` reads), then paraphrases so the concept does not hinge on one wording
SHORT_QUERIES = (
    RECOGNITION_QUERY,
    "Is {identifier} in this photo? Answer yes or no.",
    "Does this photo show {identifier}? Answer with a single word.",
    "Is {identifier} visible in this image? Answer with a single word or phrase.",
)

_SUBJECT = re.compile(r"\bRiley\b|\b[Tt]h(?:is|e) subject\b")


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    with open(TEMPLATE_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def identifier_for(name: str) -> str:
    """``"bo"`` or ``"<bo>"`` -> ``"<bo>"``; refuses names that cannot be a single token."""
    bare = name[1:-1] if name.startswith("<") and name.endswith(">") else name
    return f"<{validate_name(bare)}>"


def _fill(text: str, identifier: str) -> str:
    return text.replace(PLACEHOLDER, identifier)


def positive_templates(identifier: str = PLACEHOLDER) -> list[tuple[str, str]]:
    """Table 16: 30 (question, answer) pairs for photos that show the subject."""
    return [(_fill(t["question"], identifier), _fill(t["answer"], identifier)) for t in _load("recognition_positive")["templates"]]


def negative_templates(identifier: str = PLACEHOLDER) -> list[tuple[str, str]]:
    """Table 17: 30 (question, answer) pairs for photos without the subject."""
    return [(_fill(t["question"], identifier), _fill(t["answer"], identifier)) for t in _load("recognition_negative")["templates"]]


def short_query(identifier: str, rng, product_share: float = 0.5) -> str:
    """The product's recognition query with probability ``product_share``, else a paraphrase."""
    if rng.random() < product_share:
        return RECOGNITION_QUERY.format(identifier=identifier)
    return rng.choice(SHORT_QUERIES[1:]).format(identifier=identifier)


def conversation_questions(category: str = "object") -> list[str]:
    """Table 18 (``category == "person"``, subject called "Riley") or Table 19 (anything else,
    "this subject"), as asked to the base model together with the photo."""
    return list(_load("conversation_person" if category == "person" else "conversation_object")["questions"])


def replace_subject(text: str, identifier: str) -> str:
    """Name the subject by its identifier: "Riley"/"Riley's", "this subject", "This subject",
    "the subject" -> ``<bo>``/``<bo>'s``. Used on questions and on the model's answers."""
    return _SUBJECT.sub(identifier, text)


#: the words captions open with before their subject: "A photo of", "This image shows", ...
_CAPTION_LEAD = re.compile(r"(?:an? (?:photo|picture|image) of|(?:this|the) (?:photo|picture|image) (?:shows|features|depicts)) ", re.I)
_ARTICLE = re.compile(r"(?:an?|the) [a-z]", re.I)


def name_in_caption(caption: str, identifier: str) -> str:
    """The base model's caption of a photo of the subject, rewritten to say the subject is ``identifier``:
    "A photo of a crayfish. A crayfish is ..." -> "<bo> is a crayfish. A crayfish is ..."; "A dog lying on a bed."
    -> "<bo> is a dog lying on a bed."; "A photo of Snoopy. ..." -> "<bo> is Snoopy. ..."; a caption that does not
    open with its subject ("In this photo, two cats ...") gets "A photo of <bo>." in front. A caption cut off mid-sentence (a token limit) ends at its last full
    sentence. Only the opening is matched (anchored): linear in the caption."""
    caption = " ".join(caption.split())
    if caption and caption[-1] not in ".!?" and ". " in caption:
        caption = caption[: caption.rindex(". ") + 1]
    lead = _CAPTION_LEAD.match(caption)
    rest = caption[lead.end():] if lead else caption
    if _ARTICLE.match(rest):
        return f"{identifier} is {rest[0].lower()}{rest[1:]}"
    if lead and rest[:1].isupper():  # a name: "A photo of Snoopy. Snoopy is ..." -> "<bo> is Snoopy. Snoopy is ..."
        return f"{identifier} is {rest}"
    return f"A photo of {identifier}. {caption}".strip()
