"""Entry point: `smki <group> <command>`.

Operator mistakes (`SmkiError`) print one line on stderr and exit with the error's code;
nothing else is printed, so no traceback ever reaches an operator for bad input.
"""

from __future__ import annotations

import sys

import click

from smki import __version__
from smki.cli.audit import audit_group
from smki.cli.ca import ca_group
from smki.cli.cert import cert_group
from smki.cli.hsm import hsm_group
from smki.cli.librarian import librarian_group
from smki.cli.lint import lint_command, verify_command
from smki.cli.policy import policy_group
from smki.errors import SmkiError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smki")
def cli() -> None:
    """smki: the GB Smart Metering Key Infrastructure on PKCS#11.

    Root Authorities (key ceremonies, ARLs), Issuing Authorities (Organisation and Device
    Certificates), the Certificate Librarian, all checked against a machine-readable
    Certificate Policy, with every CA key inside an HSM.

    Exit codes: 0 success, 1 refused (a check said no), 2 usage, 3 bad input,
    4 HSM/token/PIN/key problem, 5 would overwrite or contradict existing state.
    """


cli.add_command(hsm_group)
cli.add_command(cert_group)
cli.add_command(librarian_group)
cli.add_command(audit_group)
cli.add_command(policy_group)
cli.add_command(lint_command)
cli.add_command(verify_command)
cli.add_command(ca_group)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="smki", standalone_mode=False)
    except SmkiError as exc:
        click.echo(f"smki: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("smki: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
