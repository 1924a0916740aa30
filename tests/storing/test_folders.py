"""The folder rules: which names are packages, free names, moves that never replace."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from pathlib import PurePosixPath as P

import pytest

from ymir_dropbox.config import load_config
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.folders import (
    Kind,
    free_path,
    is_ignored,
    is_package_name,
    move,
    remove_error_files,
    scan_inbox,
    split_suffix,
    write_error_files,
)
from ymir_dropbox.storing.lifecycle import Place, Status


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("model.tar.gz", True),
        ("model.tgz", True),
        ("model.zip", False),
        (".model.tar.gz.Xa12", False),
        ("model.tar.gz.part", False),
        ("model.tar.gz~", False),
        (".hidden/model.tar.gz", False),
    ],
)
def test_which_names_are_packages(name: str, taken: bool) -> None:
    watch = load_config(None).watch
    relative = PurePosixPath(name)

    assert (is_package_name(relative, watch) and not is_ignored(relative, watch)) is taken


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a.tar.gz", ("a", ".tar.gz")),
        ("a.tgz", ("a", ".tgz")),
        ("a.b", ("a", ".b")),
        ("a", ("a", "")),
    ],
)
def test_split_suffix_keeps_compound_suffixes(name: str, parts: tuple[str, str]) -> None:
    assert split_suffix(name) == parts


def test_free_path_skips_taken_names_and_error_reports(tmp_path: Path) -> None:
    (tmp_path / "m.tar.gz").write_bytes(b"1")
    (tmp_path / "m.1.tar.gz.error.json").write_text("{}")

    assert free_path(tmp_path, PurePosixPath("m.tar.gz")) == tmp_path / "m.2.tar.gz"
    assert free_path(tmp_path, PurePosixPath("new.tar.gz")) == tmp_path / "new.tar.gz"


def test_move_never_replaces_a_file(tmp_path: Path) -> None:
    source = tmp_path / "a" / "p.tar.gz"
    source.parent.mkdir()
    source.write_bytes(b"incoming")
    target = tmp_path / "b" / "sub" / "p.tar.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"already here")

    with pytest.raises(FileExistsError):
        move(tmp_path, P("a/p.tar.gz"), tmp_path, P("b/sub/p.tar.gz"))
    assert target.read_bytes() == b"already here"
    assert source.read_bytes() == b"incoming"

    target.unlink()
    move(tmp_path, P("a/p.tar.gz"), tmp_path, P("b/sub/p.tar.gz"))
    assert target.read_bytes() == b"incoming" and not source.exists()


def test_move_creates_the_target_folder(tmp_path: Path) -> None:
    source = tmp_path / "p.tar.gz"
    source.write_bytes(b"x")

    move(tmp_path, P("p.tar.gz"), tmp_path, P("deep/er/p.tar.gz"))

    assert (tmp_path / "deep" / "er" / "p.tar.gz").read_bytes() == b"x"


@pytest.mark.parametrize("side", ["source", "target"])
def test_move_never_goes_through_a_folder_swapped_for_a_symlink(tmp_path: Path, side: str) -> None:
    inbox, processing, elsewhere = (tmp_path / name for name in ("inbox", "processing", "else"))
    for folder in (inbox, processing, elsewhere):
        folder.mkdir()
    (elsewhere / "p.tar.gz").write_bytes(b"not an upload")
    (inbox / "team").mkdir()
    (inbox / "team" / "p.tar.gz").write_bytes(b"upload")
    swapped = inbox / "team" if side == "source" else processing / "team"
    if side == "source":
        (inbox / "team" / "p.tar.gz").unlink()
        swapped.rmdir()
    swapped.symlink_to(elsewhere)

    with pytest.raises(OSError, match=r"symbolic links|Not a directory"):
        move(inbox, P("team/p.tar.gz"), processing, P("team/p.tar.gz"))
    assert (elsewhere / "p.tar.gz").read_bytes() == b"not an upload"
    assert sorted(path.name for path in elsewhere.iterdir()) == ["p.tar.gz"]


def test_a_name_that_fits_is_kept_and_a_long_one_is_cut_apart_from_others() -> None:
    from ymir_dropbox.storing.folders import NAME_MAX, ROOM, fitting_name

    assert fitting_name("model.tar.gz") == "model.tar.gz"
    first, second = "a" * 240 + "1.tar.gz", "a" * 240 + "2.tar.gz"
    cut_first, cut_second = fitting_name(first), fitting_name(second)
    assert cut_first != cut_second and cut_first.endswith(".tar.gz")
    assert len(cut_first.encode()) + ROOM <= NAME_MAX
    assert fitting_name(cut_first) == cut_first  # a cut name fits as it is
    not_utf8 = os.fsdecode(b"\xe9" * 250 + b".tgz")
    assert len(os.fsencode(fitting_name(not_utf8))) + ROOM <= NAME_MAX


def test_a_walk_of_the_inbox_never_enters_an_ignored_folder_or_a_symlink(
    tmp_path: Path,
) -> None:
    """An uploader's hidden folder of a million files costs a walk nothing: it is not opened
    (every folder a walk opens is given as a FOLDER), nor is a folder behind a symlink."""
    (tmp_path / ".cache" / "deep").mkdir(parents=True)
    (tmp_path / ".cache" / "deep" / "x.tar.gz").write_bytes(b"")
    (tmp_path / "team" / "partial.part").mkdir(parents=True)
    (tmp_path / "team" / "model.tar.gz").write_bytes(b"")
    (tmp_path / "team" / "notes.txt").write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.tar.gz").write_bytes(b"")
    (tmp_path / "team" / "link").symlink_to(tmp_path / "elsewhere")
    watch = load_config(None).watch

    found = {(name, kind) for name, kind, _ in scan_inbox(tmp_path, watch, P("team"))}
    whole = sorted(name for name, kind, _ in scan_inbox(tmp_path, watch) if kind is Kind.FOLDER)

    assert found == {
        ("team", Kind.FOLDER),
        ("team/model.tar.gz", Kind.PACKAGE),
        ("team/notes.txt", Kind.MISNAMED),
        ("team/link", Kind.SPECIAL),
    }
    assert whole == [".", "elsewhere", "team"]


FAILED_ATTEMPT = Attempt(
    id=7,
    package="x.tar.gz",
    status=Status.FAILED,
    place=Place.FAILED,
    errors=(Problem("container.not_gzip", "", "not a gzip file"),),
)


def test_error_files_are_written_beside_the_package_by_descriptor(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()

    write_error_files(failed, P("team/x.tar.gz"), FAILED_ATTEMPT)

    written = sorted(path.name for path in (failed / "team").iterdir())
    assert written == ["x.tar.gz.error.json", "x.tar.gz.error.txt"]
    assert "container.not_gzip" in (failed / "team" / "x.tar.gz.error.txt").read_text()
    remove_error_files(failed, P("team/x.tar.gz"))
    assert list((failed / "team").iterdir()) == []


@pytest.mark.parametrize("planted", ["folder", "file"])
def test_nothing_is_written_or_named_through_a_symlink_in_failed(
    tmp_path: Path, planted: str
) -> None:
    """Were a symlink ever to stand in failed/ (a folder on the way, or the error file's own
    name), the error files are not written through it, and no name is chosen through it."""
    failed, elsewhere = tmp_path / "failed", tmp_path / "elsewhere"
    failed.mkdir()
    elsewhere.mkdir()
    if planted == "folder":
        (failed / "team").symlink_to(elsewhere)
        with pytest.raises(OSError):
            write_error_files(failed, P("team/x.tar.gz"), FAILED_ATTEMPT)
        with pytest.raises(OSError):
            free_path(failed, P("team/x.tar.gz"))
    else:
        (failed / "team").mkdir()
        (failed / "team" / "x.tar.gz.error.txt").symlink_to(elsewhere / "victim")
        write_error_files(failed, P("team/x.tar.gz"), FAILED_ATTEMPT)
        assert (failed / "team" / "x.tar.gz.error.txt").is_file()
        assert not (failed / "team" / "x.tar.gz.error.txt").is_symlink()

    assert list(elsewhere.iterdir()) == []
