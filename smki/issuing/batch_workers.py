"""What a batch's worker processes do: check requests, and build and sign certificates.

Each worker is started with `spawn`, opens its own PKCS#11 session (python-pkcs11 is not
thread-safe and a forked library is half-usable) and keeps the batch's certificate template.
Tasks and results are plain tuples of bytes and strings: cheap to pickle over the pool's pipe.
The PIN arrives through the pool's initialiser arguments (a pipe), never argv or environment.
Whatever goes wrong crosses back as plain data too: a request's fault is that request's outcome,
a task's fault is `(exit code, one line)` (`in_plain_data`). A live exception object need not
survive the pipe: cryptography's carry unpicklable OIDs, and ours with their own `__init__`
(RequestRejected) cannot be rebuilt from their message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.errors import BadInputError, ConflictError, HsmError, SmkiError
from smki.hsm.config import KeyRef
from smki.hsm.signer import signer_for
from smki.profiles.device_template import DeviceCertificateTemplate, certificate_der, subject_key_identifier
from smki.requests import parse_device_request
from smki.requests.batch import read_entries
from smki.requests.canonical import canonical_fields
from smki.requests.encodings import decode_request
from smki.requests.outcomes import Outcome, RequestRejected, describe_exception

# (name, device ID hex, hwType, DS|KA, 65-octet point, SKI hex, request SHA-256) for a good request;
# (name, None, outcome name, reason) for a rejected one.
ParsedRequest = tuple
# (name, serial, point, device ID octets, hwType, DS|KA) in; (name, certificate DER) out.
SigningJob = tuple[str, int, bytes, bytes, str, str]
# (None, the task's result), or ((exit code, one-line message), None) when the task as a whole failed.
TaskAnswer = tuple

_worker: dict = {}


def start_worker(key: KeyRef, pin: str, template: DeviceCertificateTemplate, verify_one_in: int) -> None:
    # An initializer that raises makes multiprocessing start a new worker, forever: keep the error
    # instead, and let the first task report it (the batch then stops with that one message).
    try:
        _worker.update(signer=signer_for(key, pin), template=template, verify_one_in=verify_one_in, error=None)
    except Exception as exc:  # noqa: BLE001 - reported by every task of this worker
        _worker.update(error=f"{type(exc).__name__}: {exc}")


def _ready() -> None:
    if _worker.get("error"):
        raise HsmError(f"a batch worker could not start: {_worker['error']}")


def check_requests(source: Path, batch_id: str, names: list[str]) -> list[ParsedRequest]:
    """Read, decode and check each named request of the batch (proof of possession included).
    A bad request gives a rejection tuple; only a fault of the batch itself raises (a ZIP that
    is no longer the file whose digest is `batch_id`, for one)."""
    _ready()
    parsed = []
    for entry in read_entries(source, names, batch_id):
        try:
            der = decode_request(entry.request_data(), entry.name)
            fast = canonical_fields(der)
            if fast is not None:  # the common case, without building the request object
                device_id, hw_type, usage, point, request_sha256 = fast.hw_serial.hex().upper(), fast.hw_type_oid, fast.key_usage, fast.point, fast.request_sha256
            else:
                request = parse_device_request(der, entry.name)
                device_id, hw_type, usage, request_sha256 = request.device_id.hex, request.hw_type_oid, request.key_usage.value, request.request_sha256
                point = request.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            subject_key_id = subject_key_identifier(point).hex().upper()
        except RequestRejected as rejected:
            parsed.append((entry.name, None, rejected.outcome.name, rejected.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - a fault of ours on this one request: it alone is answered CA:0001
            parsed.append((entry.name, None, Outcome.CA_ERROR.name, f"the request could not be checked ({describe_exception(exc)})"))
            continue
        parsed.append((entry.name, device_id, hw_type, usage, point, subject_key_id, request_sha256))
    return parsed


def sign_certificates(jobs: list[SigningJob]) -> list[tuple[str, bytes]]:
    """Build each TBS from the template, sign all digests in the HSM, assemble the certificates."""
    _ready()
    template: DeviceCertificateTemplate = _worker["template"]
    tbs_list = [template.tbs_certificate(serial, point, device_id, hw_type, usage) for _, serial, point, device_id, hw_type, usage in jobs]
    signatures = _worker["signer"].sign_digests_sampled([hashlib.sha256(tbs).digest() for tbs in tbs_list], _worker["verify_one_in"])
    return [(job[0], certificate_der(tbs, signature)) for job, tbs, signature in zip(jobs, tbs_list, signatures)]


def in_plain_data(task: Callable, *args) -> TaskAnswer:
    """Run `task` in a worker; answer its result, or its failure as (exit code, one line): never an exception object."""
    try:
        return None, task(*args)
    except SmkiError as exc:
        return (exc.exit_code, str(exc)), None
    except Exception as exc:  # noqa: BLE001 - crosses the pipe as text; the batch stops with this one line
        return (SmkiError.exit_code, f"a batch worker failed: {describe_exception(exc)}"), None


_ERRORS_BY_EXIT_CODE = {error.exit_code: error for error in (BadInputError, HsmError, ConflictError)}


def task_result(answer: TaskAnswer):
    """The result of a task run by `in_plain_data`, or its failure raised here as the SmkiError of its exit code."""
    failure, result = answer
    if failure is not None:
        exit_code, message = failure
        raise _ERRORS_BY_EXIT_CODE.get(exit_code, SmkiError)(message)
    return result
