"""PKCS#10 intake: accepted encodings, proof of possession, SMKI field checks, outcome codes."""

from smki.requests.csr import DeviceRequest, OrganisationRequest, parse_device_request, parse_organisation_request
from smki.requests.encodings import decode_request
from smki.requests.outcomes import Outcome, RequestRejected, Status

__all__ = ["DeviceRequest", "Outcome", "OrganisationRequest", "RequestRejected", "Status", "decode_request",
           "parse_device_request", "parse_organisation_request"]
