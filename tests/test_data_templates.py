"""The paper's templates (Yo'LLaVA Tables 16-19) and the subject/identifier substitution."""

import json

import pytest

from yollava.data.templates import (
    name_in_caption,
    RECOGNITION_QUERY,
    TEMPLATE_DIR,
    conversation_questions,
    identifier_for,
    negative_templates,
    positive_templates,
    replace_subject,
)
from yollava.errors import InvalidConceptNameError


def test_template_counts():
    assert len(positive_templates()) == 30
    assert len(negative_templates()) == 30
    assert len(conversation_questions("person")) == 10
    assert len(conversation_questions("object")) == 10
    assert conversation_questions("pet") == conversation_questions("object")


def test_templates_match_the_paper_text():
    pos, neg = positive_templates(), negative_templates()
    assert pos[0] == ("Is <sks> in this photo?", "Yes, <sks> is in this photo.")
    assert pos[29] == ("Can you see if <sks> is in this photo?", "Yes, <sks> is in this photo.")
    assert neg[9] == ("Can you check if <sks> is in this photo?",
                      "I've analyzed the photo, and <sks> is not present in the image you provided.")
    assert neg[29] == ("Is <sks> in this image?", "No, <sks> is not in this image.")
    assert conversation_questions("person")[0] == "What is Riley hair color?"
    assert conversation_questions("object")[8] == "What's this subject general texture like?"


def test_every_template_names_the_subject_and_is_clean():
    for q, a in positive_templates() + negative_templates():
        assert "<sks>" in q and "<sks>" in a
        assert "  " not in q + a and "’" not in q + a
        assert a.endswith(".") and q.rstrip().endswith("?")
    assert all("Riley" in q for q in conversation_questions("person"))
    assert all("this subject" in q for q in conversation_questions("object"))
    for f in TEMPLATE_DIR.glob("*.json"):
        json.loads(f.read_text())  # valid JSON, shipped as package data


def test_identifier_substitution():
    pos = positive_templates("<bo>")
    assert all("<sks>" not in q + a and "<bo>" in q for q, a in pos)
    assert negative_templates("<bo>")[26] == ("<bo>'s in this photo, right?", "No, <bo>'s not in this photo.")
    assert RECOGNITION_QUERY.format(identifier="<bo>") == (
        "Can you see if <bo> is in this photo? Answer with a single word or phrase."
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Riley has brown hair.", "<bo> has brown hair."),
        ("Riley's attire is casual.", "<bo>'s attire is casual."),
        ("This subject is a dog.", "<bo> is a dog."),
        ("The photo shows this subject on a sofa.", "The photo shows <bo> on a sofa."),
        ("the subject looks happy; The subject is small.", "<bo> looks happy; <bo> is small."),
        ("Rileys and subjects stay.", "Rileys and subjects stay."),
    ],
)
def test_replace_subject(text, expected):
    assert replace_subject(text, "<bo>") == expected


def test_questions_become_identifier_questions():
    assert replace_subject("What is Riley hair color?", "<mam>") == "What is <mam> hair color?"
    assert replace_subject("What color is this subject?", "<bo>") == "What color is <bo>?"


def test_identifier_for():
    assert identifier_for("bo") == "<bo>" == identifier_for("<bo>")
    for bad in ["", "a b", "<>", "x" * 65, "bo>", "-bo"]:
        with pytest.raises(InvalidConceptNameError):
            identifier_for(bad)


@pytest.mark.parametrize("caption, expected", [
    ("A photo of a crayfish. A crayfish is small.", "<bo> is a crayfish. A crayfish is small."),
    ("A dog lying on a bed.", "<bo> is a dog lying on a bed."),
    ("The image  shows a black cat on a sofa.", "<bo> is a black cat on a sofa."),
    ("In this photo, two cats sit.", "A photo of <bo>. In this photo, two cats sit."),
    ("A photo of Snoopy. Snoopy is a dog.", "<bo> is Snoopy. Snoopy is a dog."),  # a name the model gave the subject
    ("Snoopy on a roof.", "A photo of <bo>. Snoopy on a roof."),  # no subject opening: named in front
    ("A photo of a cat. It sits on a", "<bo> is a cat."),  # cut off by the token limit: the last full sentence
    ("", "A photo of <bo>."),
])
def test_name_in_caption(caption, expected):
    assert name_in_caption(caption, "<bo>") == expected

