"""Where a CA key lives: PKCS#11 module, token and key, from configuration only.

A real HSM differs from SoftHSM only here: a module path and a token, given either as
options or as an RFC 7512 ``pkcs11:`` URI such as

    pkcs11:token=SMKI-ROOT-OCA;object=root-oca;id=%01?module-path=/usr/lib/vendor/pkcs11.so

Which token holds which authority's key is said by each authority's configuration file
(smki.config: `hsm.token`, `hsm.key`, or `hsm.key_uri`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote_to_bytes

from smki.errors import BadInputError

# Where Debian and other distributions put SoftHSM2's module; first existing wins.
SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
MODULE_ENV = "SMKI_PKCS11_MODULE"
TOKEN_LABEL_MAX_BYTES = 32  # CK_TOKEN_INFO.label: 32 bytes of UTF-8, blank-padded
TOKEN_SERIAL_MAX_BYTES = 16  # CK_TOKEN_INFO.serialNumber: 16 printable characters, blank-padded


def pkcs11_text(value: str, what: str, max_bytes: int | None = None) -> str:
    """`value`, checked before it reaches a PKCS#11 module: UTF-8 text with no NUL (and at most
    `max_bytes` of UTF-8). A label the module cannot take as UTF-8 (an undecodable command-line
    byte arrives as a surrogate escape) once crashed the process natively inside C_FindObjects.

    The message names `what`, never the value: it may be a secret typed in the wrong place.
    """
    if not isinstance(value, str):
        raise BadInputError(f"{what} is not text")
    try:
        encoded = value.encode("utf-8")  # surrogate escapes (U+DC80-U+DCFF) do not encode
    except UnicodeEncodeError:
        raise BadInputError(f"{what} is not valid UTF-8 text") from None
    if "\x00" in value:
        raise BadInputError(f"{what} holds a NUL character")
    if max_bytes is not None and len(encoded) > max_bytes:
        raise BadInputError(f"{what} is longer than {max_bytes} bytes of UTF-8")
    return value


def token_label_text(label: str) -> str:
    """A token label, checked as `pkcs11_text` with PKCS#11's 32-byte bound."""
    return pkcs11_text(label, "the token label", TOKEN_LABEL_MAX_BYTES)


def new_token_label(label: str) -> str:
    """The label for a token being created: `token_label_text`, and what PKCS#11 can keep and give back.

    CK_TOKEN_INFO.label is blank-padded, so blanks at either end do not survive (modules strip them when
    reading it back: a label of blanks reads back empty and no command could name the token again), and a
    control character would travel into every message and audit entry that names the token."""
    token_label_text(label)
    if not label.strip() or label != label.strip() or not label.isprintable():
        raise BadInputError("the token label must be 1 to 32 bytes of printable UTF-8 text, with no blanks at either end")
    return label


def token_serial_text(serial: str) -> str:
    """A token serial number ('' for none): at most 16 printable ASCII characters, as PKCS#11 reports it."""
    pkcs11_text(serial, "the token serial number", TOKEN_SERIAL_MAX_BYTES)
    if not (serial.isascii() and serial.isprintable()) or serial != serial.strip():
        raise BadInputError("the token serial number must be printable ASCII without surrounding blanks")
    return serial


def default_module_path() -> str:
    """$SMKI_PKCS11_MODULE, else the installed SoftHSM2 module."""
    configured = os.environ.get(MODULE_ENV)
    if configured:
        return configured
    for candidate in SOFTHSM_MODULE_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return SOFTHSM_MODULE_CANDIDATES[0]


@dataclass(frozen=True)
class KeyRef:
    """A key pair on a token: found by object class + label + CKA_ID. The token is the one with
    that label (and, when `token_serial` is given, that serial number: labels need not be unique)."""

    token_label: str
    key_label: str
    key_id: bytes
    module_path: str = ""
    token_serial: str = ""

    def __post_init__(self) -> None:
        # Checked first, so that no message below repeats a value the module could not take.
        token_label_text(self.token_label)
        pkcs11_text(self.key_label, "the key label")
        pkcs11_text(self.module_path, "the PKCS#11 module path")
        token_serial_text(self.token_serial)
        if not self.token_label:
            raise BadInputError("key reference names no token")
        if not self.key_label:
            raise BadInputError(f"key reference on token {self.token_label!r} names no key label")
        if not self.key_id:
            raise BadInputError(f"key {self.key_label!r} has no CKA_ID (an explicit id is required)")

    @property
    def module(self) -> str:
        return self.module_path or default_module_path()

    def with_module(self, module_path: str) -> "KeyRef":
        """This key in `module_path` when it names no module of its own (a URI's module-path wins)."""
        return self if self.module_path else replace(self, module_path=module_path)

    @property
    def uri(self) -> str:
        """The RFC 7512 URI of this key (no PIN, ever)."""
        key_id = "".join(f"%{b:02x}" for b in self.key_id)
        serial = f";serial={_pct(self.token_serial)}" if self.token_serial else ""
        uri = f"pkcs11:token={_pct(self.token_label)}{serial};object={_pct(self.key_label)};id={key_id}"
        return uri + (f"?module-path={_pct(self.module_path)}" if self.module_path else "")


def _pct(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._~" else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


def parse_key_id(text: str) -> bytes:
    """A CKA_ID given as hex (``01``, ``0a1b``)."""
    try:
        key_id = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raise BadInputError(f"key id {text!r} is not hexadecimal") from None
    if not key_id:
        raise BadInputError("key id is empty")
    return key_id


def parse_pkcs11_uri(uri: str) -> KeyRef:
    """Parse the parts of an RFC 7512 URI that locate a key. PINs in the URI are refused."""
    if not uri.startswith("pkcs11:"):
        # Not repeated: a PIN typed into --audit-key-uri (beside --audit-pin-source) must not be echoed.
        raise BadInputError("the key URI is not a pkcs11: URI (pkcs11:token=...;object=...;id=...)")
    path, _, query = uri[len("pkcs11:"):].partition("?")
    attrs: dict[str, bytes] = {}
    for part in filter(None, path.split(";")):
        name, sep, value = part.partition("=")
        if not sep:
            # Not repeated: the attribute text may be a PIN typed into the URI.
            raise BadInputError("a pkcs11 URI attribute has no value (each is NAME=VALUE, e.g. token=...)")
        attrs[name] = unquote_to_bytes(value)
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name == "pin-value":
            raise BadInputError("pkcs11 URI carries pin-value: PINs are never accepted in a URI")
        attrs[name] = unquote_to_bytes(value)
    unknown = set(attrs) - set(URI_ATTRIBUTES)
    if unknown:
        # The names are not repeated either (a PIN typed as "pin123456" is an unknown name).
        raise BadInputError(f"the pkcs11 URI has an attribute not supported (supported: {', '.join(URI_ATTRIBUTES)})")
    return KeyRef(
        token_label=_uri_text(attrs, "token"),
        key_label=_uri_text(attrs, "object"),
        key_id=attrs.get("id", b""),
        module_path=_uri_text(attrs, "module-path"),
        token_serial=_uri_text(attrs, "serial"),
    )


URI_ATTRIBUTES = ("token", "object", "id", "module-path", "type", "serial", "model", "manufacturer")


def _uri_text(attrs: dict[str, bytes], name: str) -> str:
    """A percent-decoded URI attribute as text: refused (without its value) unless UTF-8."""
    try:
        return attrs.get(name, b"").decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"pkcs11 URI attribute {name} is not valid UTF-8 once percent-decoded") from None
