"""The examples in the documentation are real: every policy example loads and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pseudo.policy import load_policy
from tests.conftest import REPO

EXAMPLE = re.compile(r"```yaml\n(name: .*?)```", re.S)


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for index, text in enumerate(EXAMPLE.findall(doc.read_text())):
            found.append((f"{doc.name}#{index}", text))
    return found


@pytest.mark.parametrize(("where", "text"), _examples(), ids=[w for w, _ in _examples()])
def test_policy_examples_validate(where: str, text: str, tmp_path: Path) -> None:
    name = re.match(r"name: (\S+)", text)
    assert name is not None
    path = tmp_path / f"{name.group(1)}.yaml"
    path.write_text(text)
    policy = load_policy(str(path))
    assert policy.name == name.group(1)


def test_there_are_examples() -> None:
    assert len(_examples()) >= 5
