"""`smki ceremony`: run a root ceremony from its ceremony file (`smki ceremony examples DIR` writes out the shipped examples)."""

from __future__ import annotations

from pathlib import Path

import click

from smki.cli.configured import ConfiguredGroup
from smki.cli.common import CUSTODIAN_SECRET_SOURCE, SECRET_SOURCE, emit, json_option

CEREMONY_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group("ceremony", cls=ConfiguredGroup)
def ceremony_group() -> None:
    """Root Authority ceremonies: root keys and certificates, Issuing Authority certificates, ARLs,
    root re-key and contingency key recovery, each from one strictly validated file.

    Start from the examples smki ships: `smki ceremony examples ceremonies`, then edit and
    `smki ceremony check` each. Paths in a ceremony file are relative to the file.
    """


@ceremony_group.command("examples")
@click.argument("directory")  # text: an empty name is refused, not taken as "."
@json_option
def examples_command(directory, as_json):
    """Write the example ceremony files smki ships into DIRECTORY (made if missing).

    One file per ceremony: root keys (Root OCA, Root DCA), Issuing Authority certificates, an ARL,
    a root re-key and a contingency key recovery. Paths in them are relative to the file: they
    expect DIRECTORY to be a `ceremonies/` folder, and read and write state/, shares/, requests/,
    out/ and transcripts/ beside it. They name the policies smki ships (builtin:organisation,
    builtin:device). Edit names, dates, tokens and custodians, then `smki ceremony check` each.

    Never overwrites: exit 5 when any of the names exists in DIRECTORY (nothing is written),
    3 when DIRECTORY is not a directory.
    """
    from smki.shipped import write_ceremony_examples

    written = [{"file": str(path), "sha256": example.sha256} for path, example in write_ceremony_examples(directory)]
    emit(as_json, written, lambda rows: "\n".join(f"wrote {r['file']}" for r in rows))


@ceremony_group.command("check")
@click.argument("ceremony_file", type=CEREMONY_FILE)
@json_option
def check_command(ceremony_file, as_json):
    """Validate a ceremony file and show what it would do; touches no HSM and writes nothing.

    Exit 0 when it can run as written: valid, its policy loads, and none of its outputs exists.
    """
    from smki.root.authority import RootAuthority

    summary = RootAuthority.check_ceremony(ceremony_file)
    emit(as_json, summary, lambda d: "\n".join([
        f"{d['ceremony']} ceremony {d['name']!r} for {d['authority']} (file sha256 {d['sha256'][:16]}...)",
        f"policy {d['policy']['name']} {d['policy']['version']}: {d['custody']['threshold']} of {d['custody']['custodians']} custodians",
        f"custodians: {', '.join(d['custodians'])}",
        f"HSM: token {d['token']}, key {d['key']}" + (f", token set up by {d['token_setup']}" if "token_setup" in d else ""),
        "writes: " + ", ".join(d["outputs"])]))


@ceremony_group.command("run")
@click.argument("ceremony_file", type=CEREMONY_FILE)
@click.option("--operator", help="Who conducts the ceremony, as the transcript and audit trail record it (default $USER).")
@click.option("--passphrase-source", "passphrase_sources", type=CUSTODIAN_SECRET_SOURCE, multiple=True, metavar="CUSTODIAN=SOURCE",
              help="Where a custodian's passphrase comes from: env:NAME, fd:N or prompt (the default for anyone not named). Repeatable.")
@click.option("--vendor-pin-source", type=SECRET_SOURCE, metavar="SOURCE",
              help="root-key ceremony taking over its token (hsm.setup: take-over): where to read the user PIN the HSM "
              "vendor's tool set, env:NAME, fd:N or prompt (the default). Used once, to replace it; never written.")
@json_option
def run_command(ceremony_file, operator, passphrase_sources, vendor_pin_source, as_json):
    """Run a ceremony: activate the root key with m of n custodian shares, lint, sign in the HSM,
    verify, record in the root's state, and write the outputs and the transcript.

    A root-key ceremony creates a SoftHSM token (hsm.setup: create), or takes over an empty token
    the HSM vendor's tool initialised (hsm.setup: take-over): it logs in once with the vendor's
    user PIN, replaces it with one derived from the custodians' secret, and leaves the SO PIN with
    the token's security officer.

    Refuses before touching the HSM if any output exists. A refusal leaves nothing written
    (a failed root-key ceremony also removes the token it created, or gives a taken-over token back:
    its keys destroyed, the vendor's PIN set again). Exit codes: 0 done, 1 refused (policy, custody,
    shares), 3 bad input, 4 HSM (a wrong vendor PIN too), 5 an output exists or the token is not empty.
    """
    from smki.root.authority import RootAuthority

    # Each custodian's passphrase from the source the command line named (parsed with it), else a prompt.
    transcript = RootAuthority.run_ceremony(ceremony_file, operator=operator, passphrase=dict(passphrase_sources),
                                            vendor_pin=vendor_pin_source)
    json_file, text_file = transcript.files
    emit(as_json, transcript, lambda t: "\n".join([
        f"{t['ceremony']['type']} ceremony {t['ceremony']['name']!r} done; custodians present: {', '.join(t['custodians_present'])}",
        *(f"wrote {o['file']}  sha256 {o['sha256'][:16]}...  ({o['what']})" for o in t["outputs"]),
        f"transcript for the witnesses to sign: {json_file} and {text_file}"]))
