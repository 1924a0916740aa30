from __future__ import annotations

import compileall
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))

from ymir_dropbox.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """The suite starts several hundred daemons and commands, each a new Python. Where
    PYTHONDONTWRITEBYTECODE is set (some CI machines set it) and the project is installed
    editable, each of them would compile the whole package from source again, which doubles
    a daemon's start. Compiled once here, before the workers start; an up-to-date file is
    left as it is, and Python checks each one against its source."""
    if not hasattr(config, "workerinput"):
        for folder in (ROOT / "ymir_dropbox", ROOT / "tests"):
            compileall.compile_dir(folder, quiet=1)


@pytest.fixture(autouse=True)
def logging_kept_as_it_was() -> Iterator[None]:
    """A test that runs the CLI's ``main`` in this process (``pack`` in training_runs)
    configures structlog to print into its own captured stream; the next test in this worker
    would log into that dead stream. Each test leaves the configuration as it found it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config file whose base_dir is a fresh folder under tmp_path."""
    path = tmp_path / "config.toml"
    path.write_text('base_dir = "dropbox"\n[log]\nformat = "json"\n')
    return path


@pytest.fixture
def config(config_file: Path) -> Config:
    loaded = load_config(config_file)
    loaded.ensure_folders()
    return loaded


def mir_executable() -> Path:
    """The real `mir` (ymir-cmd 2.3.0): $YMIR_DROPBOX_MIR, else .venv-mir/bin/mir."""
    path = Path(os.environ.get("YMIR_DROPBOX_MIR", ROOT / ".venv-mir" / "bin" / "mir"))
    if not path.exists():
        pytest.fail(f"real mir not found at {path}: run `.ci/install-mir .venv-mir` (see README)")
    return path


@pytest.fixture
def mir_bin() -> Path:
    return mir_executable()
