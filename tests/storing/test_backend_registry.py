"""A fourth backend is one module and one registry line.

The backend below is defined here, in the test: it keeps a copy of each valid package in a
folder of its own. Registered with one line, it gets its table in the configuration (schema,
defaults, "did you mean"), its part of ``check``, its facts in the ledger and in
``ledger --json``, and a command of its own, without a change anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from factory import seed_package

from ymir_dropbox import cli
from ymir_dropbox.config import build_config, load_config
from ymir_dropbox.core.errors import ConfigError
from ymir_dropbox.operations.check import check_setup
from ymir_dropbox.storing.backends import REGISTRY
from ymir_dropbox.storing.documents import attempt_document
from ymir_dropbox.storing.importer import import_file
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Status

COPY_BACKEND = """
from contextlib import nullcontext
from dataclasses import dataclass
import hashlib

from ymir_dropbox.core.settings import BackendSettings
from ymir_dropbox.reading.rules import PATH
from ymir_dropbox.storing.backends import BackendCommand, ImportResult
from ymir_dropbox.storing.checks import folder_finding


@dataclass(frozen=True)
class CopySettings:
    folder: object


class CopyBackend:
    name = "copy"

    def __init__(self, config):
        self.folder = config.import_.settings.folder

    def check(self):
        pass

    def streamed(self, package_bytes):
        return nullcontext(None)

    def temporary_folders(self):
        return ()

    def reference(self, attempt_id):
        return None

    def recover(self, attempt):
        return None

    def was_waiting(self, attempt):
        return False

    def clean_up(self, ledger):
        pass

    def import_package(self, package):
        package.source.seek(0)
        data = package.source.read()
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{package.sha256}.tar.gz"
        target.write_bytes(data)
        model_hash = hashlib.sha1(data).hexdigest()
        return ImportResult(model_hash, target, facts={"copy_path": str(target)})


def check_setup(config):
    yield folder_finding("import.copystore.folder", config.import_.settings.folder)


def copies(config):
    folder = config.import_.settings.folder
    return [{"name": path.name} for path in sorted(folder.glob("*.tar.gz"))]


BACKEND = CopyBackend
SETTINGS = BackendSettings(
    schema={"folder": PATH},
    defaults={"folder": "copies"},
    build=lambda table, resolve, where: CopySettings(resolve(table["folder"])),
)
FACT_NAMES = ("copy_path",)
COMMANDS = (BackendCommand("copies", "list the copies", copies, ("name",), "JSON lines"),)
"""


@pytest.fixture
def copy_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("copystore")
    monkeypatch.setitem(sys.modules, "copystore", module)
    exec(compile(COPY_BACKEND, "copystore.py", "exec"), module.__dict__)
    monkeypatch.setitem(REGISTRY, "copy", "copystore")  # the one registry line
    yield


def write_config(tmp_path: Path, table: str = 'folder = "kept"') -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'base_dir = "box"\n[import]\nbackend = "copy"\n[import.copystore]\n{table}\n')
    return path


@pytest.mark.usefixtures("copy_backend")
def test_a_registered_backend_imports_and_its_facts_reach_the_ledger(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    package = seed_package(tmp_path / "seed.tar.gz")

    outcome = import_file(config, package)

    assert outcome.status is Status.IMPORTED
    sha256 = hashlib.sha256(package.read_bytes()).hexdigest()
    copy = tmp_path / "kept" / f"{sha256}.tar.gz"
    assert copy.read_bytes() == package.read_bytes()
    ledger = Ledger.open_for_reading(config.paths.ledger)
    attempt = ledger.get(outcome.attempt_id)
    assert attempt is not None and attempt.backend == "copy"
    assert dict(attempt.facts) == {"copy_path": str(copy)}
    document = attempt_document(attempt)
    assert document["copy_path"] == str(copy) and document["ymir_model_id"] is None


@pytest.mark.usefixtures("copy_backend")
def test_its_table_is_validated_with_its_own_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"import\.copystore\.foldr: unknown key.*folder"):
        load_config(write_config(tmp_path, 'foldr = "kept"'))
    defaults = build_config(
        {"import": {"backend": "copy"}}, source=None, anchor=tmp_path
    ).import_.settings
    assert defaults.folder == tmp_path / "copies"  # type: ignore[attr-defined]


@pytest.mark.usefixtures("copy_backend")
def test_check_and_the_command_line_take_its_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    config = load_config(path)
    import_file(config, seed_package(tmp_path / "seed.tar.gz"))

    findings = check_setup(config)
    capsys.readouterr()  # the import's log
    # The command line's own parser and handler (main() would also set up logging for good).
    arguments = cli.build_parser().parse_args(["--config", str(path), "copies", "--json"])
    exit_code = arguments.command(config, arguments)

    assert [finding.what for finding in findings][-1] == "import.copystore.folder"
    assert all(finding.ok for finding in findings), findings
    assert exit_code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    [line] = lines
    assert json.loads(line)["name"].endswith(".tar.gz")


def test_without_its_line_the_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"import\.backend: 'copy' is not one of"):
        build_config({"import": {"backend": "copy"}}, source=None, anchor=tmp_path)
