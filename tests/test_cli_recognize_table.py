"""``yollava recognize`` names each photo by its file name: the folder they share is the table's title, and a
long path is cut on the left (the issue: every row read "/…/shared/data/myvlm/billy_dog/billy_d…")."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Column, Table

from yollava.cli.main import photo_labels


def test_rows_keep_the_file_name_and_cut_the_folder():
    folder = Path("/work/shared/data/myvlm/billy_dog")
    paths = [folder / f"billy_dog_{i}.jpg" for i in range(3)]
    labels, title = photo_labels(paths, 20)
    assert labels == ["billy_dog_0.jpg", "billy_dog_1.jpg", "billy_dog_2.jpg"] and title == f"photos in {folder}"
    # photos of several folders: each keeps its name and as much of its own folders as fits, cut on the left
    labels, title = photo_labels([Path("/data/a/very_long_folder_name/x/y/billy_dog_1.jpg"), Path("/data/b/z.jpg")], 20)
    assert labels == ["…/y/billy_dog_1.jpg", "b/z.jpg"] and title == "photos in /data"
    # a name longer than the width stays whole
    long = "a" * 40 + ".jpg"
    assert photo_labels([Path("/tmp") / long], 20) == ([long], "photos in /tmp")
    assert photo_labels([Path("bo.jpg")], 20) == (["bo.jpg"], None)
    assert photo_labels([], 20) == ([], None)


def test_a_narrow_console_still_shows_every_name():
    paths = [Path("/work/shared/data/myvlm/billy_dog") / f"billy_dog_{i}.jpg" for i in range(3)]
    console = Console(width=60, record=True)
    labels, title = photo_labels(paths, console.width // 2)
    table = Table(Column("photo", overflow="fold"), "answer", "P(yes)", "mode", title=title)
    for label in labels:
        table.add_row(label, "Yes", "0.913", "concept head + LLM")
    console.print(table)
    out = console.export_text()
    assert all(f"billy_dog_{i}.jpg" in out for i in range(3)) and "…" not in out.split("\n", 2)[2], out
