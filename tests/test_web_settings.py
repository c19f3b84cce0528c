"""The service configuration file (kind: service): paths relative to it, the authorities' files of their kind,
TLS or a proxy, limits, and every refusal FILE:LINE: field, exit 3, never repeating a secret."""

from __future__ import annotations

import pytest

from smki.config import AuthorityKind, ConfigError, template
from smki.web.settings import STDERR, load_service_settings


def write(directory, text: str):
    path = directory / "service.yaml"
    path.write_text(text)
    return path


def test_a_full_file_with_relative_paths_and_defaults(tmp_path):
    for name in ("server.pem", "server.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "lib.yaml").write_text("kind: librarian\ndatabase: repo.db\n")
    settings = load_service_settings(write(tmp_path, """\
kind: service
listen: {address: 0.0.0.0, port: 9443}
tls: {certificate: server.pem, key: server.key, client_ca: ca.pem, key_pin_source: env:TLS_KEY}
database: state/service.db
librarian: lib.yaml
repository: {api_key_source: env:KEY, published: www}
limits: {max_connections: 100, keepalive_timeout: 2}
access_log: stderr
"""))
    assert (settings.address, settings.port, settings.workers, settings.scheme) == ("0.0.0.0", 9443, 2, "https")
    assert settings.tls.client_ca == tmp_path.resolve() / "ca.pem" and settings.tls.key_pin_source.kind == "env"
    assert settings.database == str(tmp_path.resolve() / "state" / "service.db")
    assert settings.librarian.kind is AuthorityKind.LIBRARIAN
    assert settings.repository.published == tmp_path.resolve() / "www" and settings.repository.public_crl is True
    assert settings.repository.public_search is False
    assert (settings.limits.max_connections, settings.limits.max_connections_per_client, settings.limits.request_line_timeout) == (100, 25, 2)
    assert settings.limits.max_body_bytes == 64 * 1024 * 1024 and settings.limits.max_other_body_bytes == 64 * 1024
    assert settings.access_log == STDERR


@pytest.mark.parametrize("text, line, fragment", [
    ("kind: librarian\n", 1, "kind"),
    ("kind: service\nworkers: 0\n", 2, "workers"),
    ("kind: service\ntls: {certificate: nowhere.pem, key: k, client_ca: c}\n", 2, "no such file"),
    ("kind: service\ntls: {proxy: true, certificate: a.pem}\n", 2, "proxy"),
    ("kind: service\ntls: {key: a}\n", 2, "certificate"),
    ("kind: service\nlibrarian: other.yaml\n", 2, "not librarian"),
    ("kind: service\nsurprise: 1\n", 2, "surprise"),
    ("kind: service\nlibrarian: lib.yaml\n", 2, "api_key_source"),
    ("kind: service\ndatabase: postgresql://u:pw@db/smki\n", 2, "password"),
])
def test_refusals_name_the_file_line_and_field(tmp_path, text, line, fragment):
    (tmp_path / "other.yaml").write_text("kind: issuing-oca\n")
    (tmp_path / "lib.yaml").write_text("kind: librarian\ndatabase: repo.db\n")
    with pytest.raises(ConfigError) as refused:
        load_service_settings(write(tmp_path, text))
    assert str(refused.value).startswith(f"{tmp_path / 'service.yaml'}:{line}:") and fragment in str(refused.value), str(refused.value)
    assert refused.value.exit_code == 3


@pytest.mark.parametrize("text", ["kind: service\nrepository: {api_key: s3cr3t-value}\n",
                                  "kind: service\nrepository: {api_key_source: s3cr3t-value}\n",
                                  "kind: service\ntls: {certificate: a, key: a, client_ca: a, key_pin_source: s3cr3t-value}\n"])
def test_a_secret_or_a_malformed_source_is_never_repeated(tmp_path, text):
    (tmp_path / "a").write_text("x")
    with pytest.raises(ConfigError) as refused:
        load_service_settings(write(tmp_path, text))
    assert "s3cr3t" not in str(refused.value) and ":2:" in str(refused.value)
    assert "secret" in str(refused.value) or "source" in str(refused.value)


def test_the_template_is_a_service_file():
    text = template(AuthorityKind.SERVICE)
    assert text.startswith("# smki configuration") and "kind: service" in text and "pin" not in text.replace("pin_source", "")


def test_behind_a_proxy_one_address_may_take_every_connection(tmp_path):
    settings = load_service_settings(write(tmp_path, "kind: service\ntls: {proxy: true}\nlimits: {max_connections: 300}\n"))
    assert settings.tls.proxy and settings.scheme == "http" and settings.tls.trusted == ("127.0.0.1", "::1")
    assert settings.limits.max_connections_per_client == 300
