"""SoftHSM2 administration: its configuration file and token initialisation.

Token creation drives `softhsm2-util`. Its only non-interactive PIN inputs are argv
options, which any local user can read from /proc, so we answer its prompts through
a pseudo-terminal instead: the PINs never appear on a command line, nor in its environment
(it gets only the allowed one, `child_env`).
"""

from __future__ import annotations

import os
import pty
import re
import shutil
from pathlib import Path

from smki.errors import ConflictError, HsmError
from smki.hsm.child_env import child_environment
from smki.hsm.config import new_token_label, token_label_text
from smki.hsm.store_lock import SOFTHSM, token_store_lock
from smki.shipped import softhsm_template

TEMPLATE_TOKENDIR = "@TOKENDIR@"  # where the shipped template (smki/data/softhsm/softhsm2.conf.template) names the token directory
PIN_LENGTH = range(4, 256)  # SoftHSM accepts 4 to 255 characters


def write_softhsm_conf(directory: Path, template: str | None = None) -> Path:
    """Create `directory/tokens` and `directory/softhsm2.conf` pointing at it (from `template`, default
    the shipped one); return the conf path."""
    template = softhsm_template() if template is None else template
    directory = Path(directory).resolve()
    token_dir = directory / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True)
    token_dir.chmod(0o700)
    conf = directory / "softhsm2.conf"
    if conf.exists():
        raise ConflictError(f"{conf} already exists; not overwriting it")
    conf.write_text(template.replace(TEMPLATE_TOKENDIR, str(token_dir)))
    return conf


def _softhsm_util() -> str:
    tool = shutil.which("softhsm2-util")
    if not tool:
        raise HsmError("softhsm2-util not found: install the softhsm2 package")
    return tool


def _answer_prompts(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run argv on a pseudo-terminal, typing one answer at each prompt ending in ':'."""
    environment = child_environment()
    pid, fd = pty.fork()
    if pid == 0:  # child: becomes the tool, with the pty as its terminal
        try:
            os.execve(argv[0], argv, environment)
        finally:
            os._exit(127)
    output = b""
    pending = list(answers)
    try:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if output.rstrip().endswith(b":") and pending:
                os.write(fd, pending.pop(0).encode() + b"\n")
                output += b"\n"
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def init_token(label: str, so_pin: str, user_pin: str) -> None:
    """Initialise a free SoftHSM slot as token `label` with the given SO and user PINs."""
    new_token_label(label)  # printable UTF-8, at most 32 bytes, no blanks at either end; the value is not repeated
    for name, pin in (("SO PIN", so_pin), ("user PIN", user_pin)):
        if len(pin) not in PIN_LENGTH:
            raise HsmError(f"{name} must be 4 to 255 characters")
    if "SOFTHSM2_CONF" not in os.environ:
        raise HsmError("SOFTHSM2_CONF is not set: point it at the SoftHSM configuration first")
    with token_store_lock(SOFTHSM):  # the label check and the creation, with no other process in the store
        if label in _softhsm_labels():
            raise ConflictError(f"a token labelled {label!r} already exists")
        code, output = _answer_prompts(
            [_softhsm_util(), "--init-token", "--free", "--label", label],
            [so_pin, so_pin, user_pin, user_pin],
        )
    if code != 0:
        # The tool's own words, without anything we typed (it echoes only '*').
        reason = next((line for line in output.splitlines() if "ERROR" in line), f"exit status {code}")
        raise HsmError(f"softhsm2-util could not create token {label!r}: {reason.strip()}")


def _softhsm_labels() -> list[str]:
    code, output = _answer_prompts([_softhsm_util(), "--show-slots"], [])
    return [match.strip() for match in re.findall(r"Label:\s*(.*)", output) if match.strip()]


def delete_token(label: str) -> None:
    """Remove a SoftHSM token (a ceremony that failed after creating it leaves nothing behind)."""
    token_label_text(label)
    with token_store_lock(SOFTHSM):
        code, output = _answer_prompts([_softhsm_util(), "--delete-token", "--token", label], [])
    if code != 0:
        raise HsmError(f"softhsm2-util could not delete token {label!r}: {output.strip().splitlines()[-1] if output.strip() else code}")

