"""The machine-readable Certificate Policy: schema, loading, the checks every operation makes."""

from smki.policy.loading import PolicyError
from smki.policy.model import CertificatePolicy, Environment, PolicyRefusal, RevocationMethod, load_policy

__all__ = ["CertificatePolicy", "Environment", "PolicyError", "PolicyRefusal", "RevocationMethod", "load_policy"]
