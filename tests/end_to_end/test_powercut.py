"""The daemon across power cuts, on the power-loss filesystem of tests/powerfs.py.

A short run of the soak (bench/powercut.py), one test per count of its last line, and the
fault it finds reproduced on its own, one package at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import PAUSE_ENV, invalid_package, valid_package, wait_until
from powerfs import PowerFSUnavailable, require_fuse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from powercut import Soak, YmirApi, fact, sha256, snapshot  # noqa: E402

SOAK_CUTS = 12
LAST_LINE = re.compile(
    r"(\d+) cuts: (\d+) lost, (\d+) twice, (\d+) unaccounted, (\d+) refused to start"
)


# A module-scoped fixture: the module's tests run in one worker (pyproject's --dist).
pytestmark = pytest.mark.xdist_group("powercut")


@dataclass(frozen=True)
class SoakResult:
    cuts: int
    lost: int
    twice: int
    unaccounted: int
    refused: int
    exit_code: int
    output: str


def fuse_or_fail() -> None:
    try:
        require_fuse()
    except PowerFSUnavailable as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def soak() -> SoakResult:
    fuse_or_fail()
    command = [sys.executable, str(ROOT / "bench" / "powercut.py"), "--cuts", str(SOAK_CUTS)]
    command += ["--seed", "1", "--window", "0.8", "--quiet"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    lines = completed.stdout.strip().splitlines()
    match = LAST_LINE.fullmatch(lines[-1]) if lines else None
    assert match, f"no closing line:\n{completed.stdout}\n{completed.stderr}"
    cuts, lost, twice, unaccounted, refused = (int(number) for number in match.groups())
    return SoakResult(
        cuts, lost, twice, unaccounted, refused, completed.returncode, completed.stdout
    )


def test_the_soak_cuts_as_often_as_asked_and_fails_on_any_count(soak: SoakResult) -> None:
    assert soak.cuts == SOAK_CUTS
    problems = soak.lost + soak.twice + soak.unaccounted + soak.refused
    assert soak.exit_code == (1 if problems else 0), soak.output


def test_the_daemon_starts_after_every_cut(soak: SoakResult) -> None:
    assert soak.refused == 0, soak.output


def test_nothing_is_imported_twice(soak: SoakResult) -> None:
    assert soak.twice == 0, soak.output


def test_every_package_model_and_row_is_accounted_for(soak: SoakResult) -> None:
    assert soak.unaccounted == 0, soak.output


def test_nothing_durable_or_announced_is_lost(soak: SoakResult) -> None:
    assert soak.lost == 0, soak.output


# -- the fault, one package at a time ---------------------------------------------------------


@pytest.fixture
def powered(tmp_path: Path) -> Iterator[Soak]:
    """A daemon's layout on the power-loss filesystem, made durable; no daemon yet."""
    fuse_or_fail()
    soak = Soak(tmp_path, seed=0)
    try:
        soak.prepare()
        yield soak
    finally:
        soak.close()


def write_carelessly(path: Path, data: bytes) -> None:
    """As `cp` does: the final name, no fsync."""
    with path.open("wb") as stream:
        stream.write(data)


class TestOnePackage:
    """Each on its own layout."""

    @pytest.mark.parametrize("folder", ["done", "failed"])
    def test_a_filed_package_keeps_its_bytes_across_a_cut(self, powered: Soak, folder: str) -> None:
        data = valid_package("package") if folder == "done" else invalid_package("package")
        assert powered.start(), powered.log_tail()
        write_carelessly(powered.base / "inbox" / "model.tar.gz", data)
        filed = powered.base / folder / "model.tar.gz"
        wait_until(
            lambda: filed.exists() and '"package_filed"' in powered.log_path().read_text(),
            30,
            lambda: f"the package is filed in {folder}/:\n{powered.log_tail()}",
        )

        powered.cut()

        assert filed.read_bytes() == data

    def test_a_claimed_package_keeps_its_bytes_across_a_cut(
        self, powered: Soak, tmp_path: Path
    ) -> None:
        gate = tmp_path / "gate"
        gate.touch()
        assert powered.start({PAUSE_ENV: f"claimed:model.tar.gz:{gate}"}), powered.log_tail()
        data = valid_package("package")
        write_carelessly(powered.base / "inbox" / "model.tar.gz", data)
        wait_until(
            lambda: '"paused_at"' in powered.log_path().read_text(),
            30,
            lambda: f"the package is claimed:\n{powered.log_tail()}",
        )

        powered.cut()

        assert (powered.base / "processing" / "model.tar.gz").read_bytes() == data


# -- the ymir-api backend: YMIR's host keeps its power ---------------------------------------

YMIR_IMPORT_DELAY = 8.0  # seconds from the POST to YMIR's import: three cuts fit in it


def write_carefully(folder: Path, name: str, data: bytes) -> None:
    temporary = folder / f".{name}.part"
    with temporary.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.rename(folder / name)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def filed(soak: Soak, name: str) -> bool:
    return any((soak.base / folder / name).exists() for folder in ("done", "failed"))


def ymir_done(backend: YmirApi) -> bool:
    """YMIR holds models, none still processing (result state 0)."""
    models = backend.models()
    return bool(models) and all(model["result_state"] != 0 for model in models)


def logged(soak: Soak, event: str) -> bool:
    return f'"{event}"' in soak.log_path().read_text(errors="replace")


class TestYmirApi:
    """YMIR's host keeps its power; only the daemon's host is cut."""

    @pytest.mark.mir
    def test_cuts_while_ymir_imports_never_make_a_second_model(
        self, tmp_path: Path, mir_bin: Path
    ) -> None:
        fuse_or_fail()
        soak = Soak(tmp_path, seed=0, backend="ymir-api", ymir_import_delay=YMIR_IMPORT_DELAY)
        try:
            soak.prepare()
            backend = soak.backend
            assert isinstance(backend, YmirApi)
            inbox = soak.base / "inbox"
            data = valid_package("package")
            assert soak.start(), soak.log_tail()
            write_carefully(inbox, "model.tar.gz", data)  # durable: only the daemon can lose it
            wait_until(lambda: logged(soak, "ymir_import_started"), 30, soak.log_tail)
            for cut in range(3):  # while YMIR has not begun the import yet
                soak.cut()
                assert soak.start(), soak.log_tail()
                if cut < 2:
                    wait_until(lambda: logged(soak, "ymir_resumed"), 30, soak.log_tail)

            for name in ("model.tar.gz", "again.tar.gz"):
                if name == "again.tar.gz":
                    write_carefully(inbox, name, data)  # the same bytes uploaded again
                wait_until(
                    lambda name=name: filed(soak, name) and ymir_done(backend), 60, soak.log_tail
                )
            soak.stop()
            models = backend.models()
            state = snapshot(soak.base)
        finally:
            soak.close()

        ours = [model["id"] for model in models if sha256(data)[:12] in model["description"]]
        assert len(ours) == 1, f"YMIR models {ours} for one package"
        imported = [row for row in state.rows if row["status"] == "imported"]
        assert [fact(row, "ymir_model_id") for row in imported] == ours
