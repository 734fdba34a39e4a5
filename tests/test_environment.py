"""Secrets from ``.env`` files (config/environment.py).

Proves: ``parse_dotenv`` reads the documented subset (``export``, ``#`` comments, single
and double quotes, escapes only inside double quotes, an inline `` #`` comment after an
unquoted value) and skips whatever is not an assignment, never raising (fuzzed);
``load_dotenv_files`` lets the real environment win over every file and the config
directory's ``.env`` win over the project directory's, and returns the files it read. The
environment is always a plain dict here: ``os.environ`` is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from config.environment import load_dotenv_files, parse_dotenv


def test_plain_and_exported_assignments() -> None:
    text = "A=1\nexport B=two\n  C =  spaced value  \nexport   D=x=y=z\nEMPTY=\n"
    assert parse_dotenv(text) == {
        "A": "1",
        "B": "two",
        "C": "spaced value",
        "D": "x=y=z",
        "EMPTY": "",
    }


def test_comments_and_inline_comments() -> None:
    text = (
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "TRAILING=value # a comment after a space\n"
        "TAB=value\t# a comment after a tab\n"
        "HASH=abc#def\n"  # no space before '#': part of the value
        "URL=https://example.com/#anchor\n"
    )
    assert parse_dotenv(text) == {
        "TRAILING": "value",
        "TAB": "value",
        "HASH": "abc#def",
        "URL": "https://example.com/#anchor",
    }


def test_quoted_values() -> None:
    text = (
        "SINGLE='keeps # and spaces  '\n"
        'DOUBLE="keeps # too"\n'
        "SINGLE_RAW='no\\nescape'\n"
        'QUOTED_THEN_COMMENT="v" # comment\n'
        "EMPTY_QUOTES=''\n"
    )
    assert parse_dotenv(text) == {
        "SINGLE": "keeps # and spaces  ",
        "DOUBLE": "keeps # too",
        "SINGLE_RAW": "no\\nescape",
        "QUOTED_THEN_COMMENT": "v",
        "EMPTY_QUOTES": "",
    }


def test_escapes_in_double_quotes() -> None:
    text = 'ESC="line1\\nline2\\ttab \\"quoted\\" back\\\\slash \\x kept"\n'
    assert parse_dotenv(text) == {"ESC": 'line1\nline2\ttab "quoted" back\\slash \\x kept'}


def test_lines_that_are_not_assignments_are_skipped() -> None:
    text = (
        "not an assignment\n"
        "1STARTS_WITH_DIGIT=x\n"
        "=no_key\n"
        "BAD-NAME=x\n"
        "export\n"
        "GOOD=ok\n"
        "_UNDERSCORE_OK=yes\r\n"
        "GOOD=later wins\n"
    )
    assert parse_dotenv(text) == {"GOOD": "later wins", "_UNDERSCORE_OK": "yes"}


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_parses_to_string_pairs(text: str) -> None:
    values = parse_dotenv(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True),
    st.text(alphabet=st.characters(categories=["L", "N"]), max_size=20),
)
def test_a_simple_assignment_round_trips(key: str, value: str) -> None:
    assert parse_dotenv(f"{key}={value}\n") == {key: value}
    assert parse_dotenv(f'export {key}="{value}"\n') == {key: value}


def _write_env(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".env"
    path.write_text(text, encoding="utf-8")
    return path.resolve()


def test_real_environment_wins_then_the_config_dir_then_the_project_dir(tmp_path: Path) -> None:
    project = tmp_path / "project"
    config = tmp_path / "config"
    project_env = _write_env(
        project, "ONLY_PROJECT=project\nBOTH=project\nREAL=project\nEMPTY_REAL=project\n"
    )
    config_env = _write_env(config, "BOTH=config\nREAL=config\nONLY_CONFIG=config\n")
    environ = {"REAL": "real", "EMPTY_REAL": "", "UNRELATED": "kept"}
    read = load_dotenv_files([project, config], environ)
    assert read == [project_env, config_env]
    assert environ == {
        "REAL": "real",
        "EMPTY_REAL": "",  # set (even if empty) in the real environment: it wins
        "UNRELATED": "kept",
        "ONLY_PROJECT": "project",
        "BOTH": "config",
        "ONLY_CONFIG": "config",
    }


def test_directories_without_a_dotenv_are_skipped_and_none_is_read_twice(tmp_path: Path) -> None:
    project = tmp_path / "project"
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "dir_named_env" / ".env").mkdir(parents=True)  # a directory, not a file
    project_env = _write_env(project, "A=1\n")
    environ: dict[str, str] = {}
    read = load_dotenv_files(
        [project, empty, tmp_path / "missing", tmp_path / "dir_named_env", project], environ
    )
    assert read == [project_env]
    assert environ == {"A": "1"}


def test_os_environ_is_not_touched_when_a_mapping_is_given(tmp_path: Path) -> None:
    name = "MCP_PLATFORM_TEST_ENVIRONMENT_ONLY_IN_DOTENV"
    assert name not in os.environ
    _write_env(tmp_path, f"{name}=secret\n")
    environ: dict[str, str] = {}
    load_dotenv_files([tmp_path], environ)
    assert environ == {name: "secret"}
    assert name not in os.environ
