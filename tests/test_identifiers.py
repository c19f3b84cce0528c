import pytest

from smki.errors import BadInputError
from smki.identifiers import EUI64, DeviceType, KeyUsage, RemotePartyRole


@pytest.mark.parametrize("text", ["90B3D51F30010000", "90b3d51f30010000", "90-B3-D5-1F-30-01-00-00",
                                  "90:B3:D5:1F:30:01:00:00", "90 B3 D5 1F 30 01 00 00", " 90B3-D51F-3001-0000 "])
def test_eui64_accepts_every_separator(text):
    eui = EUI64.parse(text)
    assert eui.octets == bytes([0x90, 0xB3, 0xD5, 0x1F, 0x30, 0x01, 0x00, 0x00])
    assert eui.hex == "90B3D51F30010000"
    assert eui.hyphenated == "90-B3-D5-1F-30-01-00-00"


@pytest.mark.parametrize("text, reason", [("90B3D51F300100", "got 14"), ("90B3D51F3001000000", "got 18"),
                                          ("90B3D51F3001000G", "not hexadecimal"), ("", "got 0"),
                                          ("90_B3_D5_1F_30_01_00_00", "got 23")])
def test_eui64_malformed(text, reason):
    with pytest.raises(BadInputError, match=reason):
        EUI64.parse(text)


def test_eui64_orders_and_compares_by_octets():
    assert EUI64.parse("0000000000000001") < EUI64.parse("0000000000000002")
    assert EUI64.parse("00-00-00-00-00-00-00-01") == EUI64(bytes(7) + b"\x01")


@pytest.mark.parametrize("text, role", [("supplier", RemotePartyRole.SUPPLIER), ("02", RemotePartyRole.SUPPLIER),
                                        ("networkOperator", RemotePartyRole.NETWORK_OPERATOR),
                                        ("NETWORK_OPERATOR", RemotePartyRole.NETWORK_OPERATOR),
                                        ("transitionalCoS", RemotePartyRole.TRANSITIONAL_COS), ("7F", RemotePartyRole.OTHER)])
def test_role_parse(text, role):
    assert RemotePartyRole.parse(text) is role


def test_role_ou_codes_match_gbcs():
    codes = {role.camel_name: role.ou for role in RemotePartyRole}
    assert codes == {"root": "00", "recovery": "01", "supplier": "02", "networkOperator": "03",
                     "accessControlBroker": "04", "transitionalCoS": "05", "wanProvider": "06",
                     "issuingAuthority": "07", "loadController": "08", "other": "7F",
                     "xmlSign": "87", "dspXmlSign": "89"}


@pytest.mark.parametrize("ou", ["2", "002", "0x02", "7f", "09", "ZZ"])
def test_role_from_ou_is_strict(ou):
    with pytest.raises(BadInputError):
        RemotePartyRole.from_ou(ou)


def test_unknown_role_device_type_and_usage():
    with pytest.raises(BadInputError, match="unknown RemotePartyRole 'plumber'"):
        RemotePartyRole.parse("plumber")
    with pytest.raises(BadInputError, match="unknown device type 'TOASTER'"):
        DeviceType.parse("TOASTER")
    with pytest.raises(BadInputError, match="unknown key usage"):
        KeyUsage.parse("keyCertSign")


def test_device_types_match_gbcs():
    assert [(t.name, t.value) for t in DeviceType] == [("GSME", 0), ("ESME", 1), ("CHF", 2), ("GPF", 3),
                                                        ("HCALCS", 4), ("PPMID", 5), ("TYPE2", 6)]
    assert DeviceType.parse("Type 2") is DeviceType.TYPE2 and DeviceType.parse("1") is DeviceType.ESME
