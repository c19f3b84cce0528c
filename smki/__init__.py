"""smki: the GB Smart Metering Key Infrastructure on PKCS#11."""

__version__ = "0.1.0"
