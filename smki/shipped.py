"""The files smki ships inside the package (smki/data/): the Certificate Policies and their JSON Schema,
the example ceremony files and theirs, the SoftHSM configuration template, and the XML schemas of the CSR
web services (SEC Appendix M, Appendices B and E, and smki's own Organisation CSR answer).

They are read through importlib.resources, so they are found wherever the package is installed (a
wheel in site-packages, an editable checkout), never through a path relative to the source tree.

Wherever a policy file is taken (`--policy`, `smki policy check|show|diff|adopt`, a ceremony file's
`policy:`, smki.testing), `builtin:organisation` and `builtin:device` name the shipped policies. The
name is a reference, not a path: a file called `builtin:device` is reached as `./builtin:device` (or a Path).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from smki.errors import BadInputError
from smki.files import output_directory, refuse_existing, write_new_file
from smki.identifiers import PolicyKind

BUILTIN_PREFIX = "builtin:"
CEREMONY_SUFFIX = ".yaml"


def builtin_name(kind: PolicyKind) -> str:
    """How a command names the policy smki ships for a hierarchy: `builtin:organisation`, `builtin:device`."""
    return f"{BUILTIN_PREFIX}{PolicyKind(kind).value}"


BUILTIN_POLICIES = tuple(builtin_name(kind) for kind in PolicyKind)


def _data(*parts: str) -> Traversable:
    resource = files("smki").joinpath("data")
    for part in parts:
        resource = resource.joinpath(part)
    return resource


def policy_schema() -> dict:
    """The Certificate Policy JSON Schema (2020-12)."""
    return json.loads(_data("policies", "policy.schema.json").read_text(encoding="utf-8"))


def ceremony_schema() -> dict:
    """The ceremony file JSON Schema (2020-12)."""
    return json.loads(_data("ceremonies", "ceremony.schema.json").read_text(encoding="utf-8"))


def softhsm_template() -> str:
    """The SoftHSM2 configuration, with @TOKENDIR@ where the token directory goes."""
    return _data("softhsm", "softhsm2.conf.template").read_text(encoding="utf-8")


def xml_schema(name: str) -> bytes:
    """One of the CSR web services' XML schemas (XSD 1.0), by file name: smki.web.messages compiles them."""
    return _data("schemas", name).read_bytes()


def builtin_policy(reference: object) -> PolicyKind | None:
    """The shipped policy `reference` names (`builtin:organisation`), or None when it names a file.

    An unknown `builtin:` name is refused here, in one line listing the known ones (exit 3)."""
    if not isinstance(reference, str) or not reference.startswith(BUILTIN_PREFIX):
        return None  # a Path is always a file: Path("./builtin:device") has lost the "./" that said so
    try:
        return PolicyKind(reference.removeprefix(BUILTIN_PREFIX))
    except ValueError:
        raise BadInputError(f"unknown built-in policy {reference!r} (known: {', '.join(BUILTIN_POLICIES)})") from None


def builtin_policy_bytes(kind: PolicyKind) -> bytes:
    """The shipped policy file's bytes (its SHA-256 is what an adoption records)."""
    return _data("policies", f"{PolicyKind(kind).value}.yaml").read_bytes()


@dataclass(frozen=True)
class ShippedFile:
    name: str
    data: bytes


    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def ceremony_examples() -> tuple[ShippedFile, ...]:
    """The example ceremony files, by name (their schema is not an example)."""
    return tuple(ShippedFile(entry.name, entry.read_bytes()) for entry in sorted(_data("ceremonies").iterdir(), key=lambda e: e.name)
                 if entry.name.endswith(CEREMONY_SUFFIX) and entry.is_file())


def write_ceremony_examples(directory: Path | str) -> list[tuple[Path, ShippedFile]]:
    """Copy the example ceremony files into `directory` (made if missing): (file written, example) for each.

    Never over anything: when any of the names exists, nothing is written (exit 5)."""
    directory = output_directory(directory, "the examples directory")
    examples = ceremony_examples()
    for example in examples:
        refuse_existing(directory / example.name)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for example in examples:
        write_new_file(directory / example.name, example.data)
        written.append((directory / example.name, example))
    return written
