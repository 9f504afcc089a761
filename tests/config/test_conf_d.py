"""The shipped conf.d is a working example: it loads, and says what the docs say."""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest
import tomli

from appliance.config import (
    Auth,
    ConfigError,
    Limits,
    PluginConfig,
    Smtp,
    check_config,
    load_config,
)
from appliance.hooks.host import areas, discover

from .conftest import ConfDir

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "conf.d"
#: Plugin tables the shipped files carry, with the schemas that validate them.
PLUGINS = {"spool": PluginConfig}
#: Areas of the installed plugins ([access], [flow]): the shipped files configure them.
AREAS = areas(discover())


@pytest.fixture
def shipped(tmp_path: Path) -> ConfDir:
    """conf.d copied to tmp, with the dummy certificate `make serve` would generate."""
    conf = ConfDir.__new__(ConfDir)
    conf.root, conf.path = tmp_path, tmp_path / "conf.d"
    shutil.copytree(SHIPPED, conf.path)
    conf.make_certificate()
    return conf


def test_shipped_files(shipped) -> None:
    assert sorted(p.name for p in shipped.path.glob("*.toml")) == [
        "00-server.toml",
        "10-listeners.toml",
        "20-tls.toml",
        "25-auth.toml",
        "30-limits.toml",
        "32-flow.toml",
        "35-access.toml",
        "38-relay.toml",
        "40-queue.toml",
        "41-delivery.toml",
        "45-plugins.toml",
        "46-sender-checks.toml",
        "47-geoip-dkim.toml",
        "48-policy.toml",
        "49-http-hooks.toml",
        "49-milter.toml",
        "49-rules.toml",
    ]


def test_shipped_config_loads(shipped) -> None:
    config = load_config(shipped.path, PLUGINS, AREAS)
    listeners = {
        name: (listener.address, listener.port, listener.tls_mode)
        for name, listener in config.listeners.items()
    }
    assert listeners == {
        "mta": ("127.0.0.1", 2525, "starttls"),
        "submission": ("127.0.0.1", 2587, "starttls"),
        "submissions": ("127.0.0.1", 2465, "implicit"),
    }
    assert config.server.hostname == ""
    assert config.tls.certificate == str(shipped.root / "var" / "tls" / "cert.pem")
    assert config.tls.key == str(shipped.root / "var" / "tls" / "key.pem")
    assert config.queue.directory == str(shipped.root / "var" / "spool")
    assert config.plugins["spool"] == PluginConfig(enabled=True, priority=1000)
    # AUTH: never before TLS; required on the submission listeners only
    assert config.auth.plaintext_mechanisms == []
    assert {n: lc.auth.required for n, lc in config.listeners.items()} == {
        "mta": False, "submission": True, "submissions": True}
    assert check_config(shipped.path, PLUGINS, AREAS)[0] == 0


def test_shipped_config_needs_the_generated_certificate(shipped) -> None:
    shutil.rmtree(shipped.root / "var")
    with pytest.raises(ConfigError) as caught:
        load_config(shipped.path, PLUGINS, AREAS)
    assert [line.split(": ")[1] for line in caught.value.errors] == ["tls.certificate", "tls.key"]


def test_auth_file_shows_every_auth_key_with_its_default() -> None:
    with open(SHIPPED / "25-auth.toml", "rb") as handle:
        document = tomli.load(handle)
    assert set(document) == {"auth"}
    assert list(document["auth"]) == [f.name for f in attrs.fields(Auth)]
    defaults = attrs.asdict(Auth())
    assert {k: v for k, v in document["auth"].items() if k != "failure_delay"} == {
        k: v for k, v in defaults.items() if k != "failure_delay"}


def test_limits_file_shows_every_limits_and_smtp_key_with_its_default(tmp_path) -> None:
    with open(SHIPPED / "30-limits.toml", "rb") as handle:
        document = tomli.load(handle)
    assert set(document) == {"limits", "smtp"}
    for name, cls in (("limits", Limits), ("smtp", Smtp)):
        assert list(document[name]) == [f.name for f in attrs.fields(cls)]
    shutil.copy(SHIPPED / "30-limits.toml", tmp_path)
    config = load_config(tmp_path)
    assert config.limits == Limits()
    assert config.smtp == Smtp()


def test_every_shipped_file_is_commented() -> None:
    for file in SHIPPED.glob("*.toml"):
        lines = file.read_text().splitlines()
        assert lines[0].startswith(f"# {file.name}:"), file.name
        comments = sum(1 for line in lines if line.lstrip().startswith("#"))
        settings = sum(1 for line in lines if "=" in line and not line.lstrip().startswith("#"))
        assert comments >= settings, f"{file.name}: fewer comment lines than settings"
