"""m-of-n activation of a CA key: the token PIN exists only as custodians' shares.

At a key ceremony the token's PINs are random; their secret is split with Shamir secret
sharing (SLIP-0039, Trezor's reference implementation `shamir-mnemonic`, whose RS1024
checksum rejects a tampered or mistyped share), one share per custodian, each encrypted
under that custodian's passphrase (scrypt, then AES-256-GCM bound to the authority and the
custodian's name). To use the key, m custodians present their share files and passphrases;
the PIN is rebuilt in memory, used to log in, and never written.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import shamir_mnemonic
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from smki.errors import BadInputError, RefusedError
from smki.files import MAX_SHARE_FILE_BYTES, read_input

SHARE_FORMAT = "smki-custodian-share/1"
SECRET_SIZE = 32  # 16 bytes of user PIN and 16 of SO PIN entropy
# scrypt cost: ~0.1 s and 32 MiB per share on a laptop; shares are opened a handful of times a year.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SHARE_FIELDS = {"format", "authority", "custodian", "set_id", "threshold", "custodians", "salt", "nonce", "ciphertext"}


@dataclass(frozen=True)
class TokenPins:
    user_pin: str
    so_pin: str

    @classmethod
    def from_secret(cls, secret: bytes) -> "TokenPins":
        return cls(secret[:16].hex(), secret[16:].hex())


@dataclass(frozen=True)
class CustodianShare:
    """One custodian's encrypted share, as kept in the custodian's share file."""

    authority: str
    custodian: str
    set_id: str
    threshold: int
    custodians: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes

    def to_json(self) -> bytes:
        data = {"format": SHARE_FORMAT, "authority": self.authority, "custodian": self.custodian, "set_id": self.set_id,
                "threshold": self.threshold, "custodians": self.custodians,
                **{name: base64.b64encode(getattr(self, name)).decode() for name in ("salt", "nonce", "ciphertext")}}
        return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, path: Path) -> "CustodianShare":
        try:
            data = json.loads(read_input(Path(path), MAX_SHARE_FILE_BYTES))
        except BadInputError as exc:
            raise BadInputError(f"share file {exc}") from None
        except ValueError:
            raise BadInputError(f"share file {path}: not JSON (malformed share)") from None
        if not isinstance(data, dict) or set(data) != _SHARE_FIELDS or data.get("format") != SHARE_FORMAT:
            raise BadInputError(f"share file {path}: not an {SHARE_FORMAT} share (malformed share)")
        try:
            return cls(str(data["authority"]), str(data["custodian"]), str(data["set_id"]), int(data["threshold"]),
                       int(data["custodians"]), *(base64.b64decode(data[name], validate=True) for name in ("salt", "nonce", "ciphertext")))
        except (ValueError, TypeError):
            raise BadInputError(f"share file {path}: a field is malformed") from None

    def _aad(self) -> bytes:
        return json.dumps([SHARE_FORMAT, self.authority, self.custodian, self.set_id, self.threshold, self.custodians]).encode()

    def open(self, passphrase: str) -> str:
        """The SLIP-0039 mnemonic inside; a wrong passphrase or any altered byte is refused."""
        try:
            return AESGCM(_derive_key(passphrase, self.salt)).decrypt(self.nonce, self.ciphertext, self._aad()).decode()
        except InvalidTag:
            raise RefusedError(f"custodian {self.custodian}: wrong passphrase, or the share file was altered") from None


def _derive_key(passphrase: str, salt: bytes) -> bytes:
    if not passphrase:
        raise BadInputError("a custodian passphrase may not be empty")
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase.encode())


def split_secret(authority: str, secret: bytes, threshold: int, passphrases: dict[str, str]) -> list[CustodianShare]:
    """Split `secret` into one share per custodian (name -> passphrase), any `threshold` of which rebuild it."""
    custodians = len(passphrases)
    if not 1 <= threshold <= custodians:
        raise BadInputError(f"threshold {threshold} must be between 1 and the number of custodians ({custodians})")
    if custodians > 16:
        raise BadInputError("at most 16 custodians per key (SLIP-0039)")
    if threshold == 1 and custodians > 1:
        raise BadInputError("a threshold of 1 with several custodians is not m-of-n control; use threshold >= 2")
    mnemonics = shamir_mnemonic.generate_mnemonics(1, [(threshold, custodians)], secret)[0]
    set_id = secrets.token_hex(8)
    shares = []
    for (custodian, passphrase), mnemonic in zip(sorted(passphrases.items()), mnemonics):
        share = CustodianShare(authority, custodian, set_id, threshold, custodians, os.urandom(16), os.urandom(12), b"")
        ciphertext = AESGCM(_derive_key(passphrase, share.salt)).encrypt(share.nonce, mnemonic.encode(), share._aad())
        shares.append(CustodianShare(**{**share.__dict__, "ciphertext": ciphertext}))
    return shares


def recover_secret(authority: str, presented: list[tuple[CustodianShare, str]]) -> tuple[bytes, list[str]]:
    """Rebuild the secret from (share, passphrase) pairs; return it with the custodians who took part."""
    if not presented:
        raise RefusedError(f"no custodian shares presented for {authority}")
    first = presented[0][0]
    names = [share.custodian for share, _ in presented]
    for share, _ in presented:
        if share.authority != authority:
            raise RefusedError(f"custodian {share.custodian}'s share is for {share.authority}, not {authority}")
        if share.set_id != first.set_id:
            raise RefusedError(f"custodian {share.custodian}'s share belongs to another share set ({share.set_id}, expected {first.set_id})")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise RefusedError(f"the same custodian's share was presented twice: {', '.join(duplicated)}")
    if len(presented) < first.threshold:
        raise RefusedError(f"{len(presented)} of {first.threshold} required custodian shares presented for {authority}; the key stays unused")
    mnemonics = [share.open(passphrase) for share, passphrase in presented]
    if len(set(mnemonics)) != len(mnemonics):
        raise RefusedError("the same share was presented twice under different custodian names")
    try:
        # Every presented share was authenticated by its AES-GCM tag; SLIP-0039 combines exactly m of them.
        secret = shamir_mnemonic.combine_mnemonics(mnemonics[: first.threshold])
    except shamir_mnemonic.MnemonicError as exc:
        raise RefusedError(f"the shares do not combine: {exc}") from None
    return secret, sorted(names)


def new_token_secret() -> bytes:
    return secrets.token_bytes(SECRET_SIZE)
