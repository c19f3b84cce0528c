"""`smki hsm`: tokens and CA keys in the HSM."""

from __future__ import annotations

from pathlib import Path

import click

from smki.cli.configured import ConfiguredGroup
from smki.cli.common import (POLICY, POLICY_HELP, audit_key_ref, emit, json_option, key_options, key_ref_from_options, module_option,
                             pin_source_option, state_option, token_serial_option)
from smki.files import write_new_file
from smki.hsm.keys import find_public_key, list_keys, public_key_of, read_attributes
from smki.hsm.session import load_module, open_session, token_serial_of
from smki.hsm.softhsm import write_softhsm_conf
from smki.profiles.keyids import key_identifier


@click.group("hsm", cls=ConfiguredGroup)
def hsm_group() -> None:
    """Tokens and CA keys in the HSM (PKCS#11; SoftHSM2 in development and tests)."""


@hsm_group.command("softhsm-conf")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@json_option
def softhsm_conf(directory: Path, as_json: bool) -> None:
    """Write DIRECTORY/softhsm2.conf and DIRECTORY/tokens for a private SoftHSM store.

    Export SOFTHSM2_CONF=DIRECTORY/softhsm2.conf before any other smki command. Prints the
    configuration file's path (--json: {"conf", "tokens"}).
    """
    conf = write_softhsm_conf(directory)
    emit(as_json, {"conf": str(conf), "tokens": str(conf.parent / "tokens")}, lambda d: d["conf"])


@hsm_group.command("init-token")
@module_option()
@click.option("--label", required=True, help="Label of the new token (1 to 32 characters).")
@click.option("--slot", type=click.IntRange(0), help="Slot ID of the uninitialised token to initialise (when the module offers several).")
@pin_source_option("--so-pin-source", what="the new Security Officer PIN")
@pin_source_option("--pin-source", what="the new user PIN")
@json_option
def init_token_command(module_path: str, label: str, slot: int | None, so_pin_source, pin_source, as_json: bool) -> None:
    """Create a token: SoftHSM's with softhsm2-util (PINs typed at its prompts, never on its command
    line); any other module's uninitialised token with C_InitToken and C_InitPIN.

    A token already initialised is never initialised again (that erases it). Most HSMs want their
    vendor's tool: a module that refuses C_InitToken is refused with exit 4. A root ceremony can
    take over a token the vendor's tool initialised (hsm.setup: take-over in the ceremony file).
    """
    from smki.hsm.tokens import create_token

    so_pin = so_pin_source.read(f"new SO PIN for token {label}")
    user_pin = pin_source.read(f"new user PIN for token {label}")
    created = create_token(module_path, label, so_pin, user_pin, slot)
    emit(as_json, created.summary(), lambda d: f"token {d['label']} created")


@hsm_group.command("list")
@module_option()
@click.option("--token", "token_label", help="Show the keys on this token (logs in to see private keys).")
@token_serial_option
@pin_source_option(default=None)
@json_option
def list_command(module_path: str, token_label: str | None, token_serial: str | None, pin_source: str, as_json: bool) -> None:
    """List tokens, or the keys on one token with their security attributes.

    Without --pin-source only public objects are listed.
    """
    if not token_label:
        library = load_module(module_path)
        tokens = [
            {"label": token.label, "serial": token_serial_of(token), "manufacturer": token.manufacturer_id, "model": token.model}
            for token in library.get_tokens() if token.label
        ]
        emit(as_json, {"module": module_path, "tokens": tokens},
             lambda d: "\n".join(f"{t['label']}\tserial {t['serial']}\t{t['manufacturer']} {t['model']}" for t in d["tokens"]) or "no tokens")
        return
    pin = pin_source.read(f"user PIN for token {token_label}") if pin_source else None
    session = open_session(module_path, token_label, pin, serial=token_serial or "")
    keys = []
    for key in list_keys(session):
        entry = {"label": key.label, "id": key.key_id.hex(), "class": key.object_class}
        if key.object_class == "private":
            entry["attributes"] = read_attributes(key.handle).as_json()
        elif key.object_class == "public":
            entry["subject_key_identifier"] = key_identifier(public_key_of(key.handle)).hex().upper()
        keys.append(entry)
    emit(as_json, {"token": token_label, "keys": keys}, _keys_text)


def _keys_text(data: dict) -> str:
    lines = [f"token {data['token']}"]
    for key in data["keys"]:
        extra = ""
        if "attributes" in key:
            attributes = key["attributes"]
            extra = "  " + " ".join(f"{name}={attributes[name]}" for name in ("sensitive", "extractable", "local", "never_extractable", "always_sensitive", "derive"))
        elif "subject_key_identifier" in key:
            extra = f"  SKI {key['subject_key_identifier']}"
        lines.append(f"  {key['class']:<8} {key['label']} id={key['id']}{extra}")
    return "\n".join(lines)


@hsm_group.command("keygen")
@module_option()
@key_options
@pin_source_option()
@state_option
@click.option("--policy", "policy_file", type=POLICY,
              help="A Certificate Policy whose key_attributes the key must read back with (default: smki's own requirement: "
              f"sensitive, never extractable, generated in the token, sign-only): {POLICY_HELP}.")
@json_option
def keygen_command(module_path, key_uri, token_label, token_serial, key_label, key_id, pin_source, state_dir, actor, audit_key_uri,
                   audit_pin_source, policy_file, as_json) -> None:
    """Generate a P-256 CA key pair inside the token, and audit it in the authority's state.

    The private key is a token object, SENSITIVE, not EXTRACTABLE, sign-only, with the
    given CKA_ID; its attributes are read back, printed and recorded. A key whose attributes
    differ from the policy's is destroyed and the command exits 4. When --audit-key-uri
    names the key being generated (a new audit key), that key signs the checkpoint of its
    own generation entry.
    """
    from smki.operations.keys import generate_key
    from smki.policy import load_policy

    required = load_policy(policy_file).required_key_attributes() if policy_file else None
    key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id, token_serial)
    generated = generate_key(state_dir, key, pin_source, actor=actor, audit_key=audit_key_ref(audit_key_uri, module_path),
                             audit_pin=audit_pin_source, required_attributes=required)
    emit(as_json, generated.summary(), lambda d: f"generated {d['key_uri']}\n  SKI {d['subject_key_identifier']}\n  attributes as required")


@hsm_group.command("pubkey")
@module_option()
@key_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the PEM here (never overwritten); default stdout.")
@json_option
def pubkey_command(module_path, key_uri, token_label, token_serial, key_label, key_id, out, as_json) -> None:
    """Export a key pair's public key (PEM SubjectPublicKeyInfo). Needs no PIN.

    With --json: the key's URI, its subject key identifier (method 2, as in smki's certificates), the
    PEM, and the file it was written to (null when none was named).
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = key_ref_from_options(module_path, key_uri, token_label, key_label, key_id, token_serial)
    session = open_session(key.module, key.token_label, None, serial=key.token_serial)
    public_object = find_public_key(session, key.key_label, key.key_id)
    public_key = public_key_of(public_object)
    pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    if out:
        write_new_file(out, pem)
    if as_json:
        emit(True, {"key_uri": key.uri, "subject_key_identifier": key_identifier(public_key).hex().upper(), "pem": pem.decode(),
                    "file": str(out) if out else None}, str)
    elif out:
        click.echo(f"wrote {out}")
    else:
        click.echo(pem.decode(), nl=False)
