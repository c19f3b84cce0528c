"""A root-key ceremony on a token the vendor's tool initialised (hsm.setup: take-over), on SoftHSM:
the vendor's user PIN replaced by one the custodians' shares rebuild, a wrong vendor PIN refused with
the token unchanged, a token that is not empty refused, and a ceremony failing after C_SetPIN giving
the token back. Also: hsm keygen refusing a key the policy forbids, tokens by serial, and the store
lock chosen by what the module is."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import smki as run_cli
from test_ceremony import PASSPHRASES, SOURCES, workspace

VENDOR = {"VENDOR_PIN": "vendor-pin-1234", "VENDOR_SO_PIN": "vendor-so-5678"}


def smki(*args, check=True, env=None):
    return run_cli(*args, check=check, env={**PASSPHRASES, **VENDOR, **(env or {})})


def vendor_token(label: str) -> None:
    """A token as a vendor's tool leaves it: initialised, empty, with PINs the vendor chose."""
    smki("hsm", "init-token", "--label", label, "--so-pin-source", "env:VENDOR_SO_PIN", "--pin-source", "env:VENDOR_PIN")


def take_over(work: Path, root: str, label: str) -> Path:
    ceremony = work / "ceremonies" / f"{root}.yaml"
    ceremony.write_text(re.sub(r"(?m)^  token: .*$", f"  token: {label}\n  setup: take-over", ceremony.read_text(), count=1))
    assert "setup: take-over" in ceremony.read_text()
    return ceremony


def failing_take_over(work: Path, label: str) -> Path:
    """A take-over of a new vendor token whose ceremony the policy refuses only once the root key exists, long
    after C_SetPIN (a validity beyond the policy's): the token must be given back."""
    vendor_token(label)
    ceremony = take_over(work, "root-dca", label)
    ceremony.write_text(ceremony.read_text().replace('  not_before: "2026-01-01"', '  not_before: "2026-01-01"\n  not_after: "2099-01-01"'))
    return ceremony


def logs_in(label: str, pin: str) -> bool:
    """Whether the token accepts `pin` (asked from a fresh process, so this one's login state does not matter)."""
    probe = ("import os, sys, pkcs11\nfrom smki.hsm.config import default_module_path\n"
             "token = pkcs11.lib(default_module_path()).get_token(token_label=sys.argv[1])\n"
             "try:\n    s = token.open(user_pin=os.environ['PROBE_PIN'])\nexcept pkcs11.exceptions.PinIncorrect:\n    sys.exit(1)\n"
             "print(sum(1 for _ in s.get_objects({pkcs11.Attribute.TOKEN: True})))\n")
    result = subprocess.run([sys.executable, "-c", probe, label], capture_output=True, text=True, env={**os.environ, "PROBE_PIN": pin}, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.strip() if result.returncode == 0 else False


def test_a_vendor_initialised_token_is_taken_over_and_its_pin_is_the_custodians(tmp_path, hsm_token):
    work = workspace(tmp_path, "TK")
    label = "T-VENDOR-OCA"
    vendor_token(label)
    ceremony = take_over(work, "root-oca", label)
    done = smki("ceremony", "run", str(ceremony), *SOURCES, "--vendor-pin-source", "env:VENDOR_PIN", "--json")
    transcript = json.loads(done.stdout)
    assert transcript["hsm"]["setup"] == "take-over" and "unchanged" in transcript["facts"]["token"]["so_pin"]
    assert VENDOR["VENDOR_PIN"] not in done.stdout + done.stderr + (work / "transcripts" / "root-oca-key.txt").read_text()
    assert "set up by take-over" in (work / "transcripts" / "root-oca-key.txt").read_text()
    assert logs_in(label, VENDOR["VENDOR_PIN"]) is False, "the vendor's PIN no longer opens the token"
    # The shares rebuild the new PIN: an Issuing Authority ceremony with three of five custodians signs with the root key.
    from smki.hsm import activation
    shares = [(activation.CustodianShare.load(work / "shares" / "root-oca" / f"{name}.share.json"), f"{name} correct horse battery")
              for name in ("alice", "carol", "erin")]
    secret, _ = activation.recover_secret("root-oca", shares)
    # root, audit and contingency key pairs, the wrapping key and the audit head anchor
    assert logs_in(label, activation.TokenPins.from_secret(secret).user_pin) == "8"


def test_a_wrong_vendor_pin_is_refused_and_the_token_unchanged(tmp_path, hsm_token):
    work = workspace(tmp_path, "TW")
    label = "T-VENDOR-WRONG"
    vendor_token(label)
    ceremony = take_over(work, "root-dca", label)
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, "--vendor-pin-source", "env:WRONG", check=False, env={"WRONG": "not-the-pin"})
    assert refused.returncode == 4 and "PIN incorrect" in refused.stderr and "not-the-pin" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (work / "shares").exists() and not (work / "out").exists() and not (work / "transcripts").exists()
    assert logs_in(label, VENDOR["VENDOR_PIN"]) == "0", "the vendor's PIN still opens the token, and it is still empty"


def test_a_token_that_is_not_empty_is_refused(tmp_path, hsm_token):
    work = workspace(tmp_path, "TN")
    label = "T-VENDOR-FULL"
    vendor_token(label)
    smki("hsm", "keygen", "--token", label, "--key-label", "left-over", "--key-id", "09", "--pin-source", "env:VENDOR_PIN",
         "--state", str(tmp_path / "keygen-state"))
    refused = smki("ceremony", "run", str(take_over(work, "root-dca", label)), *SOURCES, "--vendor-pin-source", "env:VENDOR_PIN", check=False)
    assert refused.returncode == 5 and "empty token" in refused.stderr, refused.stderr
    assert not (work / "shares").exists()
    assert logs_in(label, VENDOR["VENDOR_PIN"]) == "2"


def test_a_ceremony_failing_after_the_pin_change_gives_the_token_back(tmp_path, hsm_token):
    work = workspace(tmp_path, "TF")
    label = "T-VENDOR-FAIL"
    ceremony = failing_take_over(work, label)
    refused = smki("ceremony", "run", str(ceremony), *SOURCES, "--vendor-pin-source", "env:VENDOR_PIN", check=False)
    assert refused.returncode == 1 and "6.3.2 validity" in refused.stderr, refused.stderr
    assert not (work / "shares").exists() and not (work / "out").exists()
    assert logs_in(label, VENDOR["VENDOR_PIN"]) == "0", "the vendor's PIN is back and the ceremony's keys are gone"


def test_vendor_pin_source_is_only_for_a_take_over(tmp_path, hsm_token):
    work = workspace(tmp_path, "TV")
    refused = smki("ceremony", "run", str(work / "ceremonies" / "root-dca.yaml"), *SOURCES, "--vendor-pin-source", "env:VENDOR_PIN", check=False)
    assert refused.returncode == 3 and "--vendor-pin-source" in refused.stderr
    bad = work / "ceremonies" / "issuing-oca.yaml"
    bad.write_text(bad.read_text().replace("hsm:\n", "hsm:\n  setup: take-over\n"))
    refused = smki("ceremony", "check", str(bad), check=False)
    assert refused.returncode == 3 and "hsm.setup: only a root-key ceremony" in refused.stderr and f"{bad}:" in refused.stderr


def test_keygen_exits_4_and_destroys_a_key_the_policy_forbids(tmp_path, hsm_token):
    policy = tmp_path / "policy.yaml"
    original = (Path(__file__).resolve().parents[1] / "smki" / "data" / "policies" / "organisation.yaml").read_text()
    policy.write_text(original.replace("derive: false}", "derive: true}"))  # SoftHSM's keys are made sign-only: derive reads back False
    assert policy.read_text() != original
    refused = smki("hsm", "keygen", "--token", hsm_token.label, "--key-label", "forbidden", "--key-id", "7e", "--pin-source",
                   "env:SMKI_TEST_PIN", "--state", str(tmp_path / "state"), "--policy", str(policy), check=False)
    assert refused.returncode == 4 and "derive=False" in refused.stderr and "destroyed" in refused.stderr, refused.stderr
    gone = smki("hsm", "pubkey", "--token", hsm_token.label, "--key-label", "forbidden", "--key-id", "7e", check=False)
    assert gone.returncode == 4 and "no public key with label 'forbidden'" in gone.stderr, gone.stderr


def test_a_token_is_chosen_by_serial_and_an_ambiguous_label_refused(hsm_token):
    tokens = json.loads(smki("hsm", "list", "--json").stdout)["tokens"]
    mine = next(t for t in tokens if t["label"] == hsm_token.label)
    listed = smki("hsm", "list", "--token", hsm_token.label, "--token-serial", mine["serial"], "--json")
    assert json.loads(listed.stdout)["token"] == hsm_token.label
    wrong = smki("hsm", "list", "--token", hsm_token.label, "--token-serial", "0000000000000000", check=False)
    assert wrong.returncode == 4 and "with serial 0000000000000000 not found" in wrong.stderr
    smki("hsm", "init-token", "--label", "T-TWIN", "--so-pin-source", "env:VENDOR_SO_PIN", "--pin-source", "env:VENDOR_PIN")
    second = smki("hsm", "init-token", "--label", "T-TWIN", "--so-pin-source", "env:VENDOR_SO_PIN", "--pin-source", "env:VENDOR_PIN",
                  check=False)
    assert second.returncode == 5  # smki refuses to make two; a vendor's tool may not, which the next test meets through PKCS#11


def test_not_a_pkcs11_library_is_one_line_exit_4(tmp_path):
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"not an ELF file")
    refused = smki("hsm", "list", "--module", str(fake), check=False)
    assert refused.returncode == 4 and "cannot load PKCS#11 module" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    refused = smki("hsm", "list", "--module", "/bin/true", check=False)  # an ELF file, but no C_GetFunctionList
    assert refused.returncode == 4 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


P11_KIT_PROXY = next((p for p in ("/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
                                  "/usr/lib/p11-kit-proxy.so") if Path(p).exists()), None)


@pytest.mark.skipif(P11_KIT_PROXY is None, reason="p11-kit-proxy.so is not installed (Debian package p11-kit-modules; scripts/bootstrap.sh installs it)")
def test_softhsm_behind_p11_kit_proxy_takes_the_store_lock(hsm_token):
    probe = ("import sys\nfrom smki.hsm import store_lock\nfrom smki.hsm.session import load_module\n"
             "path = sys.argv[1]\nassert store_lock.module_kind(path) is None and store_lock._lock_wanted(path)  # unknown: locked\n"
             "library = load_module(path)\nprint(store_lock.module_kind(path).name, store_lock._lock_wanted(path), library.manufacturer_id)\n")
    result = subprocess.run([sys.executable, "-c", probe, P11_KIT_PROXY], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kind, locked, manufacturer = result.stdout.split(maxsplit=2)
    assert (kind, locked) == ("SOFTHSM", "True") and "PKCS#11 Kit" in manufacturer  # the proxy's name says nothing of SoftHSM
    listed = smki("hsm", "list", "--module", P11_KIT_PROXY, "--json")
    assert hsm_token.label in [t["label"] for t in json.loads(listed.stdout)["tokens"]]


def test_init_token_through_c_inittoken_where_the_module_allows_it(tmp_path, hsm_token):
    """SoftHSM's free slot, named with --slot, is initialised through PKCS#11 (C_InitToken, C_InitPIN), not softhsm2-util."""
    probe = ("import pkcs11\nfrom pkcs11.constants import TokenFlag\nfrom smki.hsm.config import default_module_path\n"
             "print(next(s.slot_id for s in pkcs11.lib(default_module_path()).get_slots(token_present=True)"
             " if not s.get_token().flags & TokenFlag.TOKEN_INITIALIZED))\n")
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert free.returncode == 0, free.stderr
    made = json.loads(smki("hsm", "init-token", "--label", "T-C-INITTOKEN", "--slot", free.stdout.strip(), "--so-pin-source", "env:VENDOR_SO_PIN",
                           "--pin-source", "env:VENDOR_PIN", "--json").stdout)
    assert made["method"] == "C_InitToken" and made["slot"] == int(free.stdout) and made["serial"]
    listed = json.loads(smki("hsm", "list", "--json").stdout)["tokens"]
    assert {"label": "T-C-INITTOKEN", "serial": made["serial"]}.items() <= next(t for t in listed if t["label"] == "T-C-INITTOKEN").items()
    assert logs_in("T-C-INITTOKEN", VENDOR["VENDOR_PIN"]) == "0", "C_InitPIN set the user PIN"
    again = smki("hsm", "init-token", "--label", "T-OTHER", "--slot", str(made["slot"]), "--so-pin-source", "env:VENDOR_SO_PIN",
                 "--pin-source", "env:VENDOR_PIN", check=False)
    assert again.returncode == 4 and "not initialised yet" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_one_token_named_with_and_without_its_serial_is_one_login(hsm_token):
    from smki.errors import HsmError
    from smki.hsm.session import get_token, is_logged_in, open_session, token_serial_of

    serial = token_serial_of(get_token(hsm_token.module, hsm_token.label))
    plain = open_session(hsm_token.module, hsm_token.label, hsm_token.pin)
    assert open_session(hsm_token.module, hsm_token.label, hsm_token.pin, serial=serial) is plain
    assert is_logged_in(hsm_token.module, hsm_token.label, serial)
    with pytest.raises(HsmError, match="PIN incorrect"):
        open_session(hsm_token.module, hsm_token.label, "not-the-pin", serial=serial)
