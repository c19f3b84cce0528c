"""The canonical encoding that entry hashes and checkpoint signatures are computed over.

UTF-8 JSON with keys sorted, no insignificant white space, non-ASCII kept as UTF-8
(`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`).
Anyone can recompute it from an exported trail with any JSON library.
"""

from __future__ import annotations

import json

CANONICALISATION = "JSON, keys sorted, separators ',' and ':', UTF-8, no ASCII escaping (RFC 8259 values)"


_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_text(value: object) -> str:
    return _encode(value)


def canonical(value: object) -> bytes:
    return _encode(value).encode("utf-8")
