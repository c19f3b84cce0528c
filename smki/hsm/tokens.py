"""Creating a token: C_InitToken and C_InitPIN through PKCS#11, or softhsm2-util for SoftHSM.

python-pkcs11 (0.10) wraps C_InitPIN (Session.init_pin) and C_SetPIN (Session.set_pin) but not
C_InitToken, so that one call goes through ctypes, on the function list of the module python-pkcs11
has already loaded and initialised (dlopen of the same path returns the same library). SoftHSM
keeps its own tool: softhsm2-util makes a fresh slot for each new token, which C_InitToken cannot.

Only a token that is not initialised yet is initialised: C_InitToken on an initialised token erases
it, and smki never does that. A module that refuses C_InitToken (most HSMs want their vendor's tool)
is refused in one line, exit 4.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import pkcs11.exceptions as p11x
from pkcs11.constants import TokenFlag

from smki.errors import ConflictError, HsmError
from smki.hsm.config import TOKEN_LABEL_MAX_BYTES, new_token_label
from smki.hsm.session import get_token, load_module, module_is_softhsm, reload_module, token_serial_of
from smki.hsm.softhsm import PIN_LENGTH, init_token as softhsm_init_token
from smki.hsm.store_lock import token_store_lock

_C_INIT_TOKEN = 9  # index of C_InitToken in CK_FUNCTION_LIST, after the version (PKCS#11 2.40 section 5.2)
_RETURN_VALUES = {0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0xA0: "CKR_PIN_INCORRECT", 0xA4: "CKR_PIN_LOCKED",
                  0xB3: "CKR_SESSION_EXISTS", 0xE1: "CKR_TOKEN_WRITE_PROTECTED", 0x07: "CKR_ARGUMENTS_BAD",
                  0x03: "CKR_SLOT_ID_INVALID", 0xE0: "CKR_TOKEN_NOT_PRESENT", 0x05: "CKR_GENERAL_ERROR"}


@dataclass(frozen=True)
class CreatedToken:
    label: str
    module: str
    method: str  # "softhsm2-util" or "C_InitToken"
    slot: int | None = None
    serial: str = ""

    def summary(self) -> dict:
        return {"label": self.label, "module": self.module, "method": self.method, "slot": self.slot, "serial": self.serial}


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", ctypes.c_ubyte * 2), ("functions", ctypes.c_void_p * 12)]


def create_token(module_path: str, label: str, so_pin: str, user_pin: str, slot: int | None = None) -> CreatedToken:
    """A new token labelled `label` with these PINs: softhsm2-util for SoftHSM, else C_InitToken + C_InitPIN
    on the module's one uninitialised token (or on `slot`)."""
    new_token_label(label)
    for name, pin in (("SO PIN", so_pin), ("user PIN", user_pin)):
        if len(pin) not in PIN_LENGTH:
            raise HsmError(f"{name} must be 4 to 255 characters")
    if module_is_softhsm(module_path) and slot is None:
        softhsm_init_token(label, so_pin, user_pin)
        reload_module(module_path)  # SoftHSM reads its tokens at C_Initialize: the new one is seen only after it
        # Its serial, as for a token made through C_InitToken: what --token-serial and serial= name it by.
        return CreatedToken(label, module_path, "softhsm2-util", serial=token_serial_of(get_token(module_path, label)))
    return _pkcs11_init_token(module_path, label, so_pin, user_pin, slot)


def _pkcs11_init_token(module_path: str, label: str, so_pin: str, user_pin: str, slot: int | None) -> CreatedToken:
    library = load_module(module_path)
    with token_store_lock(module_path):
        tokens = list(library.get_tokens())
        if any(token.label == label for token in tokens if token.flags & TokenFlag.TOKEN_INITIALIZED):
            raise ConflictError(f"a token labelled {label!r} already exists")
        blank = [token for token in tokens if not token.flags & TokenFlag.TOKEN_INITIALIZED
                 and (slot is None or token.slot.slot_id == slot)]
        if len(blank) != 1:
            where = f"slot {slot}" if slot is not None else module_path
            raise HsmError(f"{where} offers {len(blank)} uninitialised tokens" + (" (give --slot)" if blank else "")
                           + "; smki initialises only a token not initialised yet (initialising again erases it)")
        slot_id = blank[0].slot.slot_id
        padded = label.encode("utf-8").ljust(TOKEN_LABEL_MAX_BYTES, b" ")
        rv = _init_token_function(module_path)(slot_id, so_pin.encode(), len(so_pin.encode()), padded)
        if rv != 0:
            name = _RETURN_VALUES.get(rv, f"CKR 0x{rv:08X}")
            raise HsmError(f"{module_path} refused C_InitToken on slot {slot_id} ({name}): initialise the token with "
                           "the HSM vendor's tool, then take it over in a root ceremony (hsm.setup: take-over)")
        token = next(t for t in library.get_tokens() if t.slot.slot_id == slot_id)
        try:
            with token.open(so_pin=so_pin, rw=True) as session:
                session.init_pin(user_pin)
        except p11x.PKCS11Error as exc:
            raise HsmError(f"token {label!r} was initialised but C_InitPIN failed ({type(exc).__name__}): "
                           "set its user PIN with the SO PIN and the vendor's tool") from None
        return CreatedToken(label, module_path, "C_InitToken", slot_id, token_serial_of(token))


def _init_token_function(module_path: str):
    """C_InitToken from the module's function list (python-pkcs11 has initialised the module already)."""
    try:
        module = ctypes.CDLL(module_path)
        function_list = ctypes.POINTER(_FunctionList)()
        if module.C_GetFunctionList(ctypes.byref(function_list)) != 0 or not function_list:
            raise OSError("C_GetFunctionList failed")
    except (OSError, AttributeError) as exc:
        raise HsmError(f"cannot reach C_InitToken in {module_path}: {exc}") from None
    address = function_list.contents.functions[_C_INIT_TOKEN]
    if not address:
        raise HsmError(f"{module_path} offers no C_InitToken")
    prototype = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    return prototype(address)

