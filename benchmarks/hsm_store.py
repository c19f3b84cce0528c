"""A throw-away SoftHSM store and token for a benchmark run (set up before smki.hsm loads the module)."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path


def throwaway_token(label: str = "bench") -> tuple[str, str]:
    """Create a private SoftHSM store and a token in it; return (token label, user PIN)."""
    directory = tempfile.mkdtemp(prefix="smki-bench-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    from smki.hsm.softhsm import init_token, write_softhsm_conf

    os.environ["SOFTHSM2_CONF"] = str(write_softhsm_conf(Path(directory)))
    pin = secrets.token_hex(8)
    init_token(label, secrets.token_hex(8), pin)
    return label, pin
