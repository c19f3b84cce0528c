"""Loading a policy file: YAML (smki.files.read_yaml: bounded, duplicate keys refused), the published JSON Schema, then the
cross-field rules. Every error names file, line and field in one line, e.g.

    policies/device.yaml:42: eligibility.per_device_cap: 'many' is not of type 'integer'

A policy is a file, or a policy smki ships, named `builtin:organisation` or `builtin:device` (smki.shipped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from smki.errors import BadInputError
from smki.files import YamlError, parse_yaml, read_yaml
from smki.shipped import builtin_name, builtin_policy, builtin_policy_bytes, policy_schema

if TYPE_CHECKING:
    import jsonschema

class PolicyError(BadInputError):
    """A policy file that cannot be used; the message is `file:line: field: what is wrong`."""


def _line_map(node, path=(), lines=None) -> dict[tuple, int]:
    """JSON path (tuple of keys/indexes) -> 1-based line of the value (keys: of the key itself)."""
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (key_node.value,)
            lines[child] = key_node.start_mark.line + 1
            _line_map(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines)
    return lines


def _field(path) -> str:
    return ".".join(str(part) for part in path) or "(document)"


def line_of(lines: dict, path: tuple) -> int:
    """The line of the value at `path` in a file's line map, or of its nearest enclosing one (1 for the document)."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)


def policy_reference(reference: Path | str) -> Path | str:
    """What a policy is called in messages and records: the file's path, or `builtin:NAME` for a shipped policy."""
    kind = builtin_policy(reference)
    return Path(reference) if kind is None else builtin_name(kind)


def read_policy_document(path: Path | str) -> tuple[dict, dict, bytes]:
    """(data, line map, file bytes) of a policy file (or `builtin:NAME`) that is valid YAML and valid under the schema."""
    kind = builtin_policy(path)
    return read_validated_yaml(path, policy_schema(), PolicyError, "a policy is a mapping of RFC 3647 sections",
                               raw=None if kind is None else builtin_policy_bytes(kind))


def read_validated_yaml(path: Path | str, document_schema: dict, error: type[BadInputError], shape: str,
                        what: str = "policy", raw: bytes | None = None,
                        before_schema: Callable[[dict, dict], None] | None = None) -> tuple[dict, dict, bytes]:
    """(data, line map, file bytes) of a YAML file (duplicate keys refused) valid under `document_schema`;
    anything else raises `error` as `file:line: field: what is wrong`. With `raw`, those bytes (a file
    shipped in the package) are checked, and `path` only names them. `before_schema(data, line map)` runs
    first: for checks whose values the schema's messages must not repeat (a secret written in the file)."""
    path = Path(path) if raw is None else path
    try:
        document = read_yaml(path, what) if raw is None else parse_yaml(raw, path)
    except YamlError as exc:
        raise error(str(exc)) from None
    node, data, raw = document.node, document.data, document.raw
    if node is None or not isinstance(data, dict):
        raise error(f"{path}:1: (document): {shape}")
    lines = _line_map(node)
    if before_schema is not None:
        before_schema(data, lines)
    import jsonschema  # here, not at the top: a command that never reads a policy or ceremony file does not pay for it

    validator = jsonschema.Draft202012Validator(document_schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (line_of(lines, tuple(e.absolute_path)), list(e.absolute_path)))
    if errors:
        raise error(_describe(path, lines, _deepest(errors[0])))
    return data, lines, raw


def _deepest(error: "jsonschema.ValidationError") -> "jsonschema.ValidationError":
    """The most specific cause (schema branches wrap the real mistake)."""
    while error.context:
        error = min(error.context, key=lambda e: (-len(e.absolute_path), e.message))
    return error


def _describe(path: Path, lines: dict, error: "jsonschema.ValidationError") -> str:
    where = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(key for key in error.instance if key not in allowed)
        if unknown:
            where = where + (unknown[0],)
            return f"{path}:{line_of(lines, where)}: {_field(where)}: unknown key (allowed: {', '.join(sorted(allowed))})"
    if "propertyNames" in list(error.absolute_schema_path):  # a key that is not an allowed name
        where = where + (error.instance,)
        return f"{path}:{line_of(lines, where)}: {_field(where)}: not an allowed name ({error.message})"
    if error.validator == "pattern" and "[0-2]" in str(error.validator_value):
        return f"{path}:{line_of(lines, where)}: {_field(where)}: {error.instance!r} is not a well-formed OID"
    return f"{path}:{line_of(lines, where)}: {_field(where)}: {error.message}"


def sha256_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()

