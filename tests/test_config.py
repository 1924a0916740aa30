"""Configuration: defaults, where the file comes from, and refusals that name key and file."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from factory import run_dropbox, seed_package, write_config

from ymir_dropbox.config import (
    DEFAULTS,
    ENV_VAR,
    build_config,
    config_path,
    full_schema,
    load_config,
)
from ymir_dropbox.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


# -- defaults ---------------------------------------------------------------------------------


def test_no_config_and_no_environment_means_built_in_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)

    config = load_config(config_path(None))

    assert config.source is None
    assert config.base_dir == tmp_path / "dropbox"
    assert config.paths.models == tmp_path / "dropbox" / "models"
    assert config.paths.ledger == tmp_path / "dropbox" / "ledger.sqlite"
    assert config.limits.max_ratio == DEFAULTS["limits"]["max_ratio"]
    assert config.import_.backend == "embedded"


def test_import_without_config_uses_dropbox_in_the_working_folder(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "seed.tar.gz")

    done = run_dropbox("import", package, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    model_hash = re.search(r"model hash: ([0-9a-f]{40})", done.stdout)
    assert model_hash is not None
    assert (tmp_path / "dropbox" / "models" / model_hash.group(1)).is_file()


def test_relative_paths_in_a_file_are_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    config_file = write_config(tmp_path / "etc" / "config.toml", "../box")
    monkeypatch.chdir(tmp_path / "elsewhere")

    config = load_config(config_file)

    assert config.base_dir.resolve() == tmp_path / "box"


def test_loading_a_config_creates_no_folder(tmp_path: Path) -> None:
    load_config(write_config(tmp_path / "config.toml", "box"))

    assert os.listdir(tmp_path) == ["config.toml"]


# -- where the file comes from ----------------------------------------------------------------


@pytest.fixture
def tiny_limit(tmp_path: Path) -> Path:
    """A config whose package size limit every package exceeds: easy to see it was read."""
    return write_config(tmp_path / "tiny.toml", "box", "[limits]\nmax_package_bytes = 10\n")


def validate_codes(done: Any) -> list[str]:
    return [error["code"] for error in json.loads(done.stdout)["errors"]]


@pytest.mark.parametrize(
    "place", ["before-the-command", "after-the-command"], ids=lambda place: place
)
def test_config_option_is_read_before_or_after_the_command(
    place: str, tiny_limit: Path, tmp_path: Path
) -> None:
    package = seed_package(tmp_path / "seed.tar.gz")
    option = ["--config", str(tiny_limit)]
    arguments = (
        [*option, "validate", "--json", str(package)]
        if place == "before-the-command"
        else ["validate", "--json", str(package), *option]
    )

    done = run_dropbox(*arguments, cwd=tmp_path)

    assert validate_codes(done) == ["package.too_large"]


def test_environment_variable_names_the_config(tiny_limit: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "seed.tar.gz")

    done = run_dropbox("validate", "--json", package, cwd=tmp_path, env={ENV_VAR: str(tiny_limit)})

    assert validate_codes(done) == ["package.too_large"]


def test_config_option_wins_over_the_environment(tiny_limit: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "seed.tar.gz")
    plain = write_config(tmp_path / "plain.toml", "box")

    done = run_dropbox(
        "validate",
        "--json",
        "--config",
        plain,
        package,
        cwd=tmp_path,
        env={ENV_VAR: str(tiny_limit)},
    )

    assert validate_codes(done) == []


def test_empty_environment_variable_means_no_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "")

    assert config_path(None) is None


def test_environment_variable_is_used_when_no_option(
    tiny_limit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tiny_limit))

    assert config_path(None) == tiny_limit
    assert config_path("other.toml") == Path("other.toml")


# -- refusals ---------------------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown-top-level-key": ('base_dir = "box"\ncolour = "red"\n', "colour"),
    "unknown-key-in-section": ("[limits]\nmax_foo = 1\n", "limits.max_foo"),
    "unknown-section": ("[limit]\nmax_members = 1\n", "limit"),
    "wrong-type-string-for-int": ('[limits]\nmax_members = "ten"\n', "limits.max_members"),
    "wrong-type-bool-for-int": ("[limits]\nmax_members = true\n", "limits.max_members"),
    "wrong-type-section": ("limits = 5\n", "limits"),
    "below-minimum": ("[limits]\nmax_ratio = 0.5\n", "limits.max_ratio"),
    "not-allowed-value": ('[log]\nlevel = "loud"\n', "log.level"),
    "nested-section-key": ('[import.mir]\ndst_rev = "no-id-here"\n', "import.mir.dst_rev"),
    "missing-folder": ('[paths]\ninbox = "no-such-folder"\n', "paths.inbox"),
    "missing-ledger-folder": ('[paths]\nledger = "nowhere/ledger.sqlite"\n', "paths.ledger"),
    "mir-backend-without-root": ('[import]\nbackend = "mir"\n', "import.mir.root"),
}


@pytest.mark.parametrize(("text", "key"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_exits_2_naming_key_and_file(text: str, key: str, tmp_path: Path) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)

    done = run_dropbox("validate", "--config", config_file, "x.tar.gz", cwd=tmp_path)

    assert done.returncode == 2
    assert str(config_file) in done.stderr
    assert re.search(rf"(^|\W){re.escape(key)}(\W|$)", done.stderr), done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "text",
    [
        "base_dir = \n",
        "[limits\n",
        'base_dir = "a"\nbase_dir = "b"\n',
        b"\xff\xfe".decode("latin-1"),
    ],
    ids=["no-value", "unclosed-table", "repeated-key", "not-utf8"],
)
def test_invalid_toml_exits_2_naming_the_file(text: str, tmp_path: Path) -> None:
    config_file = tmp_path / "broken.toml"
    config_file.write_bytes(text.encode("latin-1"))

    done = run_dropbox("validate", "--config", config_file, "x.tar.gz", cwd=tmp_path)

    assert done.returncode == 2
    assert f"{config_file}: not valid TOML" in done.stderr


def test_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    done = run_dropbox("validate", "--config", "absent.toml", "x.tar.gz", cwd=tmp_path)

    assert done.returncode == 2
    assert "absent.toml: config file not found" in done.stderr


def test_every_problem_of_a_config_is_reported(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text('colour = 1\n[limits]\nmax_members = "ten"\n[log]\nlevel = "loud"\n')

    with pytest.raises(ConfigError) as raised:
        load_config(config_file)

    message = str(raised.value)
    assert all(key in message for key in ("colour", "limits.max_members", "log.level"))


# -- config.example.toml ----------------------------------------------------------------------


def schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Every leaf key of the config schema, dotted (``import.mir.dst_rev``)."""
    keys: set[str] = set()
    for name, rule in schema.items():
        dotted = f"{prefix}{name}"
        if rule.get("type") == "dict" and "schema" in rule:
            keys |= schema_keys(rule["schema"], f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


def documented_keys(text: str) -> set[str]:
    """Keys set or shown commented out (``# key = ...``), under their ``[section]``."""
    section = ""
    keys: set[str] = set()
    for line in text.splitlines():
        header = re.match(r"^\s*#?\s*\[([A-Za-z0-9_.]+)\]\s*$", line)
        if header:
            section = header.group(1) + "."
            continue
        key = re.match(r"^\s*#?\s*([A-Za-z0-9_]+)\s*=", line)
        if key:
            keys.add(section + key.group(1))
    return keys


def test_config_example_exists() -> None:
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"


def test_config_example_loads() -> None:
    config = load_config(EXAMPLE)

    assert config.source == EXAMPLE


def test_config_example_documents_every_key() -> None:
    missing = schema_keys(full_schema()) - documented_keys(EXAMPLE.read_text())

    assert missing == set()


def test_config_example_values_are_the_defaults() -> None:
    example = dataclasses.replace(load_config(EXAMPLE), source=None)

    assert example == build_config({}, source=None, anchor=EXAMPLE.parent)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"watch": {"setle_seconds": 2}},
            "watch.setle_seconds: unknown key (did you mean 'settle_seconds'?)",
        ),
        ({"improt": {}}, "improt: unknown key (did you mean 'import'?)"),
        ({"import": {"ymir_api": {"pasword_file": "x"}}}, "(did you mean 'password_file'?)"),
        ({"zzz": 1}, "zzz: unknown key"),
    ],
    ids=["field", "section", "nested", "nothing-close"],
)
def test_an_unknown_key_gets_a_suggestion(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_config(document, source=None, anchor=Path.cwd())

    assert expected in str(raised.value)
    if "did you mean" not in expected:
        assert "did you mean" not in str(raised.value)


def test_the_ymir_api_backend_needs_its_url_user_staging_and_a_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"import\.ymir_api\.url: required"):
        build_config({"import": {"backend": "ymir-api"}}, source=None, anchor=tmp_path)


def test_the_ymir_api_password_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = {"url": "http://ymir:12001/", "user": "a@b.c", "staging": "staging"}
    document = {"import": {"backend": "ymir-api", "ymir_api": section}}
    monkeypatch.delenv("YMIR_DROPBOX_YMIR_PASSWORD", raising=False)
    without = build_config(document, source=None, anchor=tmp_path).import_.settings
    assert without is not None and without.password == "" and without.password_file is None

    monkeypatch.setenv("YMIR_DROPBOX_YMIR_PASSWORD", "secret")
    settings = build_config(document, source=None, anchor=tmp_path).import_.settings

    assert settings is not None
    assert (settings.url, settings.password, settings.staging) == (
        "http://ymir:12001",
        "secret",
        tmp_path / "staging",
    )


def test_a_route_is_a_project_or_a_project_and_the_group_that_may_use_it(
    tmp_path: Path,
) -> None:
    """The first release's ``team-a = 3`` keeps working beside the form with a group."""
    routes = {"team-a": 3, "team-b": {"project": 4, "group": "team-b"}, "team-c": {"project": 5}}
    section = {"url": "http://ymir:1", "user": "u", "staging": "staging", "projects": routes}
    document = {"import": {"backend": "ymir-api", "ymir_api": section}}

    settings = build_config(document, source=None, anchor=tmp_path).import_.settings

    assert settings.projects == {"team-a": 3, "team-b": 4, "team-c": 5}  # type: ignore[union-attr]
    assert settings.writers == {"team-b": "team-b"}  # type: ignore[union-attr]
    routes["team-d"] = {"group": "team-d"}
    with pytest.raises(ConfigError, match=r"import\.ymir_api\.projects\.team-d\.project: required"):
        build_config(document, source=None, anchor=tmp_path)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ({"inbox": "box"}, r"paths\.processing \(.*\) is inside paths\.inbox"),
        ({"done": "box/inbox"}, r"paths\.inbox and paths\.done are one folder"),
        ({"models": "box/inbox/models"}, r"paths\.models \(.*\) is inside paths\.inbox"),
        ({"inbox": "box/done/in"}, r"paths\.inbox \(.*\) is inside paths\.done"),
    ],
    ids=["inbox-is-the-base", "done-is-the-inbox", "models-in-the-inbox", "inbox-in-done"],
)
def test_folders_inside_one_another_are_refused(
    tmp_path: Path, paths: dict[str, str], message: str
) -> None:
    for folder in ("box/inbox/models", "box/done/in"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)

    with pytest.raises(ConfigError, match=message):
        build_config({"base_dir": "box", "paths": paths}, source=None, anchor=tmp_path)
