"""Strict spec text: JSON and YAML readers that refuse a key given twice in one mapping.

Python's `json` and PyYAML keep the last of duplicate keys silently, so a spec with two
`models:` lines would run with whichever came last. Used by `JobSpec.from_json` /
`from_yaml` and by the service's request parser.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


class DuplicateKey(ValueError):
    """A mapping names the same key twice."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"duplicate key {key!r}: give each field once")
        out[key] = value
    return out


def loads_json(text: str | bytes) -> Any:
    """`json.loads` that raises `DuplicateKey` for an object with a key twice."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse a key given twice (with its line)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:  # with its type: `yes:` (True) beside `1:` is no key given twice
                    duplicate = (type(key), key) in seen
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}: give each field once",
                        key_node.start_mark)  # fmt: skip
                seen.add((type(key), key))
        return super().construct_mapping(node, deep=deep)
