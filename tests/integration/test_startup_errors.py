"""What ``check-config`` checks on this machine and what ``serve`` says when it cannot
start: both through the real CLI (subprocesses), for a key file given as the
certificate (default and SNI), a listen address this machine does not have and a
log file in a missing directory. check-config must refuse what serve would refuse,
and both must name the listener, the key and the file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import Appliance


def cli(app: Appliance, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args, "--config-dir", str(app.config_dir)],
        capture_output=True, text=True, timeout=60, cwd=app.root)


def check_and_serve(app: Appliance) -> tuple[subprocess.CompletedProcess,
                                              subprocess.CompletedProcess]:
    return cli(app, "check-config"), cli(app, "serve")


@pytest.fixture
def setup(tmp_path, certs):
    """``setup(extra, listeners)``: a config dir, not started."""
    def make(extra: str, listeners: dict | None = None) -> Appliance:
        return Appliance(tmp_path / "app", extra, listeners or {"mta": {}}, None)
    return make


def test_a_key_given_as_the_certificate(setup, certs):
    _, key, _ = certs
    app = setup(f'[tls]\ncertificate = "{key}"\nkey = "{key}"\n',
                {"mta": {"tls_mode": "starttls"}})
    check, serve = check_and_serve(app)
    assert check.returncode == 1 and "configuration OK" not in check.stdout
    assert "50-extra.toml: tls.certificate" in check.stdout
    assert f"{key} holds no certificate" in check.stdout
    assert "listener mta" in check.stdout
    assert serve.returncode == 1
    assert "listener mta" in serve.stderr and f"{key} holds no certificate" in serve.stderr


def test_a_key_given_as_an_sni_certificate(setup, certs):
    cert, key, _ = certs
    app = setup(f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n'
                f'[[listeners.mta.tls.sni]]\nnames = ["mail.example.org"]\n'
                f'certificate = "{key}"\nkey = "{key}"\n',
                {"mta": {"tls_mode": "implicit"}, "plain": {}})
    check, serve = check_and_serve(app)
    assert check.returncode == 1
    assert ("50-extra.toml: listeners.mta.tls.sni[0].certificate: "
            f"listener mta: certificate {key} holds no certificate") in check.stdout
    assert serve.returncode == 1
    assert "listener mta" in serve.stderr and "tls.sni[0].certificate" in serve.stderr


def test_a_certificate_with_the_wrong_key(setup, certs, tmp_path):
    import trustme

    cert, _, _ = certs
    other = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("other.test").private_key_pem.write_to_path(other)
    app = setup(f'[tls]\ncertificate = "{cert}"\nkey = "{other}"\n',
                {"mta": {"tls_mode": "starttls"}})
    check, serve = check_and_serve(app)
    assert check.returncode == 1
    assert f"certificate {cert} with key {other}" in check.stdout
    assert serve.returncode == 1 and f"certificate {cert} with key {other}" in serve.stderr


def test_a_listen_address_this_machine_does_not_have(setup):
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): no machine has it
    app = setup("", {"mta": {"address": "192.0.2.1", "port": 2525}})
    check, serve = check_and_serve(app)
    assert check.returncode == 1
    assert "00-test.toml: listeners.mta.address" in check.stdout
    assert "192.0.2.1 is not an address of this machine" in check.stdout
    assert serve.returncode == 1
    assert "listener mta" in serve.stderr and "192.0.2.1:2525" in serve.stderr


def test_a_log_file_in_a_missing_directory(setup, tmp_path):
    log = tmp_path / "missing" / "appliance.log"
    app = setup(f'[logging]\ndestination = "file"\nfile = "{log}"\n')
    check, serve = check_and_serve(app)
    assert check.returncode == 1
    assert f"50-extra.toml: logging.file: directory {log.parent} does not exist" in check.stdout
    assert serve.returncode == 1
    assert f"logging.file {log}" in serve.stderr


def test_a_port_already_taken_names_the_listener(setup):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = setup("", {"mta": {"port": port}})
        serve = cli(app, "serve")
    assert serve.returncode == 1
    assert f"listener mta: cannot listen on 127.0.0.1:{port}" in serve.stderr


def test_what_check_config_accepts_serve_starts(setup, certs, tmp_path):
    cert, key, _ = certs
    (tmp_path / "logs").mkdir()
    app = setup(f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n'
                f'[logging]\ndestination = "file"\nfile = "{tmp_path}/logs/appliance.log"\n',
                {"mta": {"tls_mode": "starttls"}})
    check = cli(app, "check-config")
    assert check.returncode == 0, check.stdout
    app.start()
    assert app.stop() == 0
    assert "listening" in (tmp_path / "logs" / "appliance.log").read_text()
