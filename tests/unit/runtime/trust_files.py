"""Crafted model files for the trust tests: real skops files with one node rewritten, as an attacker would."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np


def json_node(value: Any) -> dict[str, Any]:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(value),
            "is_json": True}


def tuple_node(*items: dict[str, Any]) -> dict[str, Any]:
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": list(items)}


def call_node(module: str, name: str, *args: Any) -> dict[str, Any]:
    """A node that skops builds as `module.name(*args)`."""
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": tuple_node(*(a if isinstance(a, dict) else json_node(a) for a in args))}


def read_schema(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("schema.json"))


def rewrite(data: bytes, edit_schema: Callable[[dict[str, Any]], None] | None = None,
            files: dict[str, bytes] | None = None) -> bytes:
    """`data` (a skops zip) with its schema edited in place by `edit_schema` and `files` replaced or added."""
    with zipfile.ZipFile(io.BytesIO(data)) as zin:
        schema = json.loads(zin.read("schema.json"))
        if edit_schema is not None:
            edit_schema(schema)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            for name in zin.namelist():
                if name == "schema.json":
                    zout.writestr(name, json.dumps(schema))
                elif not files or name not in files:
                    zout.writestr(name, zin.read(name))
            for name, body in (files or {}).items():
                zout.writestr(name, body)
    return out.getvalue()


def with_attribute(data: bytes, node: dict[str, Any], name: str = "payload_") -> bytes:
    """`data` whose top-level estimator gains the attribute `name`, built from `node`."""
    def edit(schema: dict[str, Any]) -> None:
        attrs = schema["content"]
        attrs["content"][name] = node
        attrs["key_types"]["content"].append({"__class__": "str", "__module__": "builtins",
                                              "__loader__": "TypeNode"})
    return rewrite(data, edit)


def first_array_node(schema: dict[str, Any]) -> dict[str, Any]:
    """Some stored ndarray node of `schema` (to aim a method node at a real array)."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("__loader__") == "NdArrayNode" and node.get("type") == "numpy":
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError("no stored array in the schema")


def tree_nodes_files(schema: dict[str, Any]) -> list[str]:
    """The zip members holding the node arrays of every tree in `schema`."""
    out: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("__loader__") == "TreeNode":
                out.append(node["content"]["content"]["nodes"]["file"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def with_tree_nodes(data: bytes, edit: Callable[[np.ndarray], None]) -> bytes:
    """`data` with `edit` applied to the node array of every tree."""
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in tree_nodes_files(json.loads(zf.read("schema.json"))):
            nodes = np.load(io.BytesIO(zf.read(name)), allow_pickle=False).copy()
            edit(nodes)
            buf = io.BytesIO()
            np.save(buf, nodes, allow_pickle=False)
            files[name] = buf.getvalue()
    return rewrite(data, files=files)


def with_sklearn_version(data: bytes, version: str) -> bytes:
    """`data` recording `version` as the scikit-learn that saved every estimator in it."""
    def edit(node: Any) -> None:
        if isinstance(node, dict):
            entry = node.get("content", {}).get("_sklearn_version") if node.get("__loader__") == "DictNode" else None
            if isinstance(entry, dict) and entry.get("__loader__") == "JsonNode":
                entry["content"] = json.dumps(version)
            for v in node.values():
                edit(v)
        elif isinstance(node, list):
            for v in node:
                edit(v)
    return rewrite(data, edit)


def other_minor(version: str) -> str:
    """`version` with the last digit of its minor changed: the same length, another major.minor."""
    major, minor, rest = version.split(".", 2)
    return f"{major}.{minor[:-1]}{(int(minor[-1]) + 1) % 10}.{rest}"
