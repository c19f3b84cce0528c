"""Entry point: `smki <group> <command>`.

Operator mistakes (`SmkiError`) print one line on stderr and exit with the error's code;
nothing else is printed, so no traceback ever reaches an operator for bad input.

Any other exception is a bug: each one found is fixed where it arises (an input check that
raises SmkiError). As a last resort an uncaught exception prints one line naming only its
type, never its text or traceback (either could hold a PIN or other operator input), and
exits 70; SMKI_TRACEBACK=1 shows the traceback to a developer who asks for it.

Ctrl-C (SIGINT) ends any command with one line, `smki: interrupted`, and exit 130 (128 + SIGINT,
as shells report it): the transaction in progress rolls back, outputs not yet released are
removed, and a batch's worker processes (which ignore SIGINT) are stopped by this process.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from smki import __version__
from smki.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, BadInputError, SmkiError

TRACEBACK_ENV = "SMKI_TRACEBACK"

# Command name -> "module:attribute". Each group is imported only when it runs (or when
# --help lists them): one certificate from the CLI should not pay for loading them all.
COMMANDS = {
    "hsm": "smki.cli.hsm:hsm_group",
    "policy": "smki.cli.policy:policy_group",
    "ceremony": "smki.cli.ceremony:ceremony_group",
    "config": "smki.cli.config:config_group",
    "cert": "smki.cli.cert:cert_group",
    "ca": "smki.cli.ca:ca_group",
    "librarian": "smki.cli.librarian:librarian_group",
    "serve": "smki.cli.serve:serve_command",
    "audit": "smki.cli.audit:audit_group",
    "subscribers": "smki.cli.subscribers:subscribers_group",
    "tls": "smki.cli.tls:tls_group",
    "portal": "smki.cli.portal:portal_group",
    "lint": "smki.cli.lint:lint_command",
    "verify": "smki.cli.lint:verify_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smki")
@click.option("-v", "--verbose", count=True, help="Log what long operations do (-v), and more detail (-vv), on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
def cli(verbose: int, quiet: bool) -> None:
    """smki: the GB Smart Metering Key Infrastructure on PKCS#11.

    Root Authorities (key ceremonies, ARLs), Issuing Authorities (Organisation and Device
    Certificates), the Certificate Librarian, all checked against a machine-readable
    Certificate Policy, with every CA key inside an HSM.

    Exit codes: 0 success, 1 refused (a check said no), 2 usage, 3 bad input,
    4 HSM/token/PIN/key problem, 5 would overwrite or contradict existing state,
    70 internal error (a bug), 130 interrupted (Ctrl-C).

    Logs go to stderr (never into --json output): warnings by default, -q errors only,
    -v INFO, -vv DEBUG; SMKI_LOG_LEVEL=debug|info|warning|error when no flag is given.
    No log line ever holds a PIN, passphrase, share or API key.
    """
    from smki.cli.logs import chosen_level, configure_logging

    configure_logging(chosen_level(verbose, quiet))


def main(argv: list[str] | None = None) -> None:
    try:
        refuse_undecodable_arguments(sys.argv[1:] if argv is None else argv)
        cli.main(args=argv, prog_name="smki", standalone_mode=False)
    except SmkiError as exc:
        click.echo(f"smki: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C at a prompt into Abort
            _interrupted()
        click.echo("smki: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.strerror is None:
            _internal_error(exc)
        # The system refused a path, descriptor or address the operator gave (a name too long, a
        # file where a directory is due, no permission): say which and why, as for any bad input.
        where = f"{_shortened(str(exc.filename))}: " if exc.filename is not None else ""
        click.echo(f"smki: error: {where}{exc.strerror}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, nothing secret
        _internal_error(exc)


def _interrupted() -> None:
    """Ctrl-C: one line, exit 130. Whatever was under way has already unwound (transactions rolled back,
    unreleased outputs removed, workers stopped) on its way here."""
    click.echo("smki: interrupted", err=True)
    sys.exit(EXIT_INTERRUPTED)


def refuse_undecodable_arguments(argv: list[str]) -> None:
    """Refuse, before any command runs, a command-line value that is not UTF-8.

    Python hands undecodable argv bytes over as surrogate escapes (U+DC80-U+DCFF); passed on,
    they crashed the PKCS#11 module natively or broke the audit trail's JSON. File names are
    refused too (Linux allows any bytes in them; smki takes UTF-8 names only). The message names
    the argument's position and option, never its value: it could be a mistyped secret.
    """
    for position, argument in enumerate(argv, start=1):
        if _is_utf8(argument):
            continue
        option, equals, _ = argument.partition("=")
        previous = argv[position - 2] if position > 1 else ""
        if argument.startswith("--") and equals and _is_utf8(option):
            where = f" ({option}=...)"
        elif previous.startswith("-") and _is_utf8(previous) and "=" not in previous:
            where = f" (the value after {_shortened(previous)})"
        else:
            where = ""
        raise BadInputError(f"command-line argument {position}{where} is not valid UTF-8 text; "
                            "give every value, file names included, as UTF-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # surrogate escapes do not encode
    except UnicodeEncodeError:
        return False
    return True


def _shortened(text: str, limit: int = 120) -> str:
    """A name fit for one line: control characters escaped, a long one cut."""
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _internal_error(exc: Exception) -> None:
    if os.environ.get(TRACEBACK_ENV) == "1":
        raise exc
    click.echo(f"smki: internal error ({type(exc).__name__}): a bug, not a mistake of yours; please report it "
               f"with the command line (without secrets). {TRACEBACK_ENV}=1 shows the traceback.", err=True)
    sys.exit(EXIT_INTERNAL)


def run() -> None:
    """The `smki` command (console script and `python -m smki.cli.main`): `main()`, then a fast exit.

    Once a command has returned, its transaction is committed, its files are written and closed, and its
    sessions are closed; what is left is tearing the interpreter down (some 400 modules, OpenSSL, the
    PKCS#11 module), which took 60-90 ms of a 0.4 s single-certificate call here
    (benchmarks/bench_batch.py). So the process ends with os._exit, after everything a normal exit does
    that matters: the atexit handlers (logging's flush, multiprocessing's joins, weakref finalizers such as
    the removal of a private read copy), every PKCS#11 session closed, stdout and stderr flushed.
    `main()` itself still raises SystemExit, for callers in the same process.
    """
    try:
        main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    _exit_now(status)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("text") prints the text and exits 1, as the interpreter would
    return 1


def _exit_now(status: int) -> None:
    import atexit

    atexit._run_exitfuncs()  # what the interpreter runs first at exit; the module teardown after it is skipped
    session = sys.modules.get("smki.hsm.session")
    if session is not None:
        session.close_all()  # logged out and closed, as at a normal exit (the module itself is not finalised)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`smki ... | head`) or stream: nothing more to say
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
