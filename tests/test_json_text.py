"""The indented JSON of ``pseudo diff --json`` is the standard library's, byte for byte."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

import pytest

from pseudo.review.json_text import dumps_indented


class _Level(IntEnum):
    LOW = 1


SAMPLES: list[Any] = [
    {},
    [],
    "",
    None,
    True,
    0,
    -1.5,
    float("nan"),
    float("inf"),
    {"a": [], "b": {}, "c": [[], [{}]], 'é\u2028"\\\n': "ü\x00\x1f</script>"},
    {"rows": [{"a": "1", "b": None, "n": 2**70, "f": 0.1, "t": (1, "x")} for _ in range(3)]},
    [_Level.LOW, True, False, None, 1e300, -0.0],
    {"deep": [[[[[[["x"]]]]]]]},
]


@pytest.mark.parametrize("data", SAMPLES)
def test_same_as_json_dumps(data: Any) -> None:
    assert dumps_indented(data) == json.dumps(data, indent=2, ensure_ascii=False)


def test_not_plain_data_is_left_to_json_dumps() -> None:
    keys = {1: "int key", None: "null key", 2.5: "float key"}
    assert dumps_indented(keys) == json.dumps(keys, indent=2, ensure_ascii=False)
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    assert dumps_indented(deep) == json.dumps(deep, indent=2, ensure_ascii=False)
    with pytest.raises(TypeError):
        dumps_indented({"set": {1}})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        dumps_indented(loop)
