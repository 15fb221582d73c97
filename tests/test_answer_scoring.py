"""The committed answer-scoring script (``scripts/answers_about_concept.py``) judges what the answer says, not the
concept's name in it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from answers_about_concept import filler, kind_words, names_kind  # noqa: E402


def test_the_identifier_does_not_name_the_kind():
    words = kind_words("billy_dog", "dog")
    assert not names_kind("<billy_dog> is a seahorse.", words)  # the name says dog; the answer does not
    assert names_kind("<billy_dog> is a small white dog on a sofa.", words)
    assert not names_kind("<asian_doll> is a cap.", kind_words("asian_doll", "toy"))
    assert names_kind("<asian_doll> is a doll in a red dress.", kind_words("asian_doll", "toy"))


def test_filler_is_caught():
    x = "<rex>"
    assert filler("<rex> is a <rex> in the context of the given text.", x, "Describe <rex>.")
    assert filler("In this photo, <rex> is doing something.", x, "What is <rex> doing?")
    assert filler("In this photo: <rex>. Who is in this photo?", x, "Describe <rex>.")
    assert filler("<rex> is a big brown dog lying on the grass.", x, "Describe <rex>.") is None
