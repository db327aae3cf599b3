"""The operations guide and the threat model say only what is true.

Every test the threat model (or the cryptography and operations guides) names exists, and every
``pseudo`` command in the operations guide is a real command with real options.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import REPO, cli

DOCS = ["threat-model.md", "operations.md", "cryptography.md"]
TEST_REF = re.compile(r"tests/(test_[a-z0-9_]+)\.py::\s*([a-z0-9_]+)")
GROUPS = {"vault", "project", "audit", "policy"}


def _references() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        text = (REPO / "docs" / doc).read_text()
        found += [(doc, module, name) for module, name in TEST_REF.findall(text)]
    return found


def _commands() -> list[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("pseudo "):
                lines.append(line)
    return lines


def test_the_threat_model_names_its_tests() -> None:
    references = _references()
    assert len({(m, n) for _, m, n in references}) >= 40


@pytest.mark.parametrize(("doc", "module", "name"), _references())
def test_every_test_named_in_the_docs_exists(doc: str, module: str, name: str) -> None:
    source = (REPO / "tests" / f"{module}.py").read_text()
    assert re.search(rf"^def {name}\(", source, re.M), f"{doc} names a missing test"


@pytest.mark.parametrize("line", _commands())
def test_every_command_in_the_operations_guide_exists(
    line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    words = shlex.split(line.replace("$(date +%F)", "DATE"))
    path = words[1:3] if words[1] in GROUPS else words[1:2]
    result = cli(*path, "--help")
    assert result.code == 0, f"{line}: {result.stderr}"
    for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
        assert option in result.stdout, f"{line}: {option} is not an option of {' '.join(path)}"


def test_the_operations_guide_covers_every_task() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    for heading in (
        "## Backup",
        "## Restore",
        "## Adding and removing people",
        "## Raising the scrypt cost",
        "## Rotating the re-identification key",
        "## Closing a project",
        "## Running on PostgreSQL",
    ):
        assert heading in text
    assert len(_commands()) >= 20
