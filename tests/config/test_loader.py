"""Validation: defaults, listeners and their overrides, cross-key checks, plugins, and the
exact error lines an admin sees."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from appliance.config import (
    AppConfig,
    ConfigError,
    Limits,
    Listener,
    Logging,
    PluginConfig,
    Queue,
    Server,
    Smtp,
    Tls,
    load_config,
)

from .plugin_fixtures import PLUGINS, GreylistConfig, NeedsKeyConfig, ValidatorConfig


def errors_of(conf, plugins=PLUGINS) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path, plugins)
    return caught.value.errors


# --- defaults ------------------------------------------------------------------------


def test_defaults_are_the_documented_ones(conf) -> None:
    conf.write("00-empty.toml", "# nothing set\n")
    config = load_config(conf.path)
    assert attrs.asdict(config.server) == {
        "hostname": "",
        "banner": "#HostName# ESMTP smtp-appliance",
        "max_sessions": 10000,
        "stress_threshold": 80,
        "stress_command_timeout": 10.0,
        "stress_data_timeout": 10.0,
        "workers": 1,
        "graceful_timeout": 30.0,
        "plugin_timeout": 30.0,
        "state": {
            "backend": "local",
            "redis_url": "redis://127.0.0.1:6379/0",
            "redis_mode": "single",
            "redis_nodes": [],
            "redis_service": "mymaster",
            "redis_tls": False,
            "redis_tls_ca": "",
            "redis_tls_certificate": "",
            "redis_tls_key": "",
            "key_prefix": "smtp-appliance:",
            "timeout": 0.25,
            "retry_interval": 5.0,
            "max_keys": 100_000,
        },
        "user": "",
        "group": "",
    }
    assert attrs.asdict(config.limits) == {
        "max_message_size": 10 * 1024 * 1024,
        "max_recipients": 1000,
        "recipient_overshoot": 100,
        "max_messages_per_session": 1000,
        "max_received_headers": 30,
        "max_bad_commands": 8,
        "max_header_size": 256 * 1024,
        "max_message_line_length": 0,
        "session_timeout": 900.0,
        "command_timeout": 120.0,
        "data_timeout": 120.0,
        "message_timeout": 600.0,
    }
    assert attrs.asdict(config.smtp) == {
        "bare_linefeed": "reject",
        "received_header": "all",
        "vrfy": False,
        "expn": False,
        "xclient_hosts": [],
        "xforward_hosts": [],
    }
    assert attrs.asdict(config.tls) == {
        "certificate": "",
        "key": "",
        "sni": [],
        "client_ca": "",
        "min_version": "TLSv1.2",
        "ciphers": "",
        "dh_params": "",
        "handshake_timeout": 30.0,
        "required": False,
    }
    assert attrs.asdict(config.queue) == {"directory": "/var/spool/smtp-appliance", "fsync": True,
                                          "timeout": 600.0}
    assert attrs.asdict(config.logging) == {
        "level": "info",
        "format": "text",
        "destination": ("stderr",),
        "file": "",
        "syslog_facility": "mail",
        "syslog_address": "",
        "journal_socket": "/run/systemd/journal/socket",
        "classes": {"connection": "", "tls": "", "auth": "", "transcript": "off",
                    "verdict": "", "queue": "", "delivery": "", "disconnect": "",
                    "server": ""},
    }
    assert config.metrics.listen == ""
    assert config.plugins == {}


def test_default_listener_when_none_is_configured(conf) -> None:
    conf.write("10-limits.toml", "[limits]\nmax_recipients = 7\n")
    config = load_config(conf.path)
    assert list(config.listeners) == ["default"]
    default = config.listeners["default"]
    assert (default.address, default.port, default.tls_mode) == ("127.0.0.1", 25, "none")
    assert default.enabled
    assert default.limits.max_recipients == 7  # carries the global tables too


def test_empty_listeners_table_also_gets_the_default(conf) -> None:
    conf.write("10-l.toml", "[listeners]\n")
    assert list(load_config(conf.path).listeners) == ["default"]


def test_no_default_listener_once_one_is_configured(conf) -> None:
    conf.write("10-l.toml", "[listeners.mta]\nport = 2525\n")
    assert list(load_config(conf.path).listeners) == ["mta"]


def test_config_objects_are_frozen(conf) -> None:
    conf.write("10-l.toml", "[listeners.mta]\nport = 2525\n")
    config = load_config(conf.path)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.listeners["mta"].limits.max_recipients = 5  # type: ignore[misc]


# --- listeners and their overrides ---------------------------------------------------


def test_listener_overrides_resolve_key_by_key(conf) -> None:
    cert, key = conf.make_certificate()
    other_cert, _ = conf.make_certificate("var/other")
    conf.write(
        "10-listeners.toml",
        """
        [listeners.mta]
        address = "0.0.0.0"
        port = 25

        [listeners.submission]
        address = "::"
        port = 587
        tls_mode = "starttls"
        max_sessions = 50
        banner = "submission ready"

        [listeners.submission.limits]
        max_recipients = 50

        [listeners.submission.smtp]
        vrfy = true

        [listeners.submission.tls]
        certificate = "../var/other/cert.pem"
        """,
    )
    conf.write(
        "20-global.toml",
        """
        [tls]
        certificate = "../var/tls/cert.pem"
        key = "../var/tls/key.pem"
        min_version = "TLSv1.3"

        [limits]
        max_recipients = 500
        max_message_size = "20 MiB"

        [smtp]
        bare_linefeed = "normalize"
        """,
    )
    config = load_config(conf.path)
    mta, submission = config.listeners["mta"], config.listeners["submission"]

    assert submission.limits.max_recipients == 50  # the listener's own key wins...
    assert submission.limits.max_message_size == 20 * 1024 * 1024  # ...others are global
    assert submission.limits.data_timeout == 120  # ...or the default
    assert submission.smtp.vrfy is True
    assert submission.smtp.bare_linefeed == "normalize"
    assert submission.tls.certificate == str(other_cert)
    assert submission.tls.key == str(key)
    assert submission.tls.min_version == "TLSv1.3"
    assert (submission.max_sessions, submission.banner) == (50, "submission ready")

    assert mta.limits == config.limits  # no override: exactly the global tables
    assert mta.smtp == config.smtp
    assert mta.tls == config.tls
    assert mta.tls.certificate == str(cert)
    assert (mta.max_sessions, mta.banner) == (None, None)


def test_listener_override_wins_even_if_the_global_key_is_set_later(conf) -> None:
    conf.write(
        "10-l.toml",
        "[listeners.mta]\nport = 25\n[listeners.mta.limits]\nmax_recipients = 5\n",
    )
    conf.write("90-admin.toml", "[limits]\nmax_recipients = 900\n")
    config = load_config(conf.path)
    assert config.listeners["mta"].limits.max_recipients == 5
    assert config.limits.max_recipients == 900


def test_listener_values_are_type_checked(conf) -> None:
    conf.write(
        "10-l.toml",
        """
        [listeners.a]
        address = "localhost"
        port = "25"
        tls_mode = "ssl"
        enabled = "yes"

        [listeners.b]
        port = 70000
        max_sessions = 0
        """,
    )
    file = conf.file("10-l.toml")
    assert errors_of(conf) == [
        f'{file}: listeners.a.address: expected an IPv4 or IPv6 address such as "127.0.0.1"'
        ' or "::" (got "localhost")',
        f'{file}: listeners.a.port: expected a port from 1 to 65535 (got "25")',
        f'{file}: listeners.a.tls_mode: expected one of "none", "starttls", "implicit" (got "ssl")',
        f'{file}: listeners.a.enabled: expected true or false (got "yes")',
        f"{file}: listeners.b.port: expected a port from 1 to 65535 (got 70000)",
        f"{file}: listeners.b.max_sessions: expected an integer of at least 1 (got 0)",
    ]


def test_listener_name_must_be_lowercase_word(conf) -> None:
    conf.write("10-l.toml", '[listeners."Port 25"]\nport = 25\n')
    assert errors_of(conf) == [
        f"""{conf.file("10-l.toml")}: listeners."Port 25": expected a listener name of """
        """lowercase letters, digits, '-' and '_' (got "Port 25")"""
    ]


def test_tls_mode_written_as_tls_gets_a_hint(conf) -> None:
    conf.write("10-l.toml", '[listeners.mta]\nport = 25\ntls = "starttls"\n')
    assert errors_of(conf) == [
        f"{conf.file('10-l.toml')}: listeners.mta.tls: expected a table of TLS settings "
        '(got "starttls"); the TLS mode is set with tls_mode = "starttls"'
    ]


def test_broken_global_key_is_reported_once_not_per_listener(conf) -> None:
    conf.write("10-l.toml", "[listeners.a]\nport = 25\n[listeners.b]\nport = 26\n")
    conf.write("20-limits.toml", "[limits]\nmax_recipients = -3\nmax_recipents = 1\n")
    file = conf.file("20-limits.toml")
    errors = errors_of(conf)
    assert errors[0] == f"{file}: limits.max_recipients: expected an integer of at least 1 (got -3)"
    assert errors[1].startswith(f"{file}: limits.max_recipents: unknown key 'max_recipents'")
    assert len(errors) == 2


def test_duplicate_address_and_port_is_an_error(conf) -> None:
    conf.write("10-l.toml", "[listeners.mta]\nport = 2525\n")
    conf.write(
        "20-more.toml",
        """
        [listeners.again]
        address = "127.0.0.1"
        port = 2525
        [listeners.other_address]
        address = "127.0.0.2"
        port = 2525
        [listeners.disabled]
        port = 2525
        enabled = false
        """,
    )
    assert errors_of(conf) == [
        f"{conf.file('20-more.toml')}: listeners.again.port: expected a port not used by "
        "another enabled listener (got 2525, already used by listener 'mta' on 127.0.0.1)"
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [("0.0.0.0", "192.0.2.1"), ("192.0.2.1", "0.0.0.0"), ("::", "::1"), ("::1", "0:0::1")],
)
def test_wildcard_and_spelling_variants_collide(conf, first: str, second: str) -> None:
    conf.write(
        "10-l.toml",
        f'[listeners.a]\naddress = "{first}"\nport = 25\n'
        f'[listeners.b]\naddress = "{second}"\nport = 25\n',
    )
    [error] = errors_of(conf)
    assert "listeners.b.port: expected a port not used by another enabled listener" in error


def test_ipv4_and_ipv6_wildcards_may_share_a_port(conf) -> None:
    conf.write(
        "10-l.toml",
        '[listeners.v4]\naddress = "0.0.0.0"\nport = 25\n'
        '[listeners.v6]\naddress = "::"\nport = 25\n',
    )
    assert set(load_config(conf.path).listeners) == {"v4", "v6"}


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls_listener_without_certificate_is_an_error(conf, mode: str) -> None:
    conf.write("10-l.toml", f'[listeners.mta]\nport = 25\ntls_mode = "{mode}"\n')
    assert errors_of(conf) == [
        f'{conf.file("10-l.toml")}: listeners.mta.tls_mode: tls_mode = "{mode}" needs '
        "tls.certificate and tls.key (got no tls.certificate)"
    ]


def test_sni_certificates_resolve_paths_and_check_names(conf) -> None:
    conf.make_certificate()
    conf.write(
        "20-tls.toml",
        """
        [[tls.sni]]
        names = ["mail.example.org", "*.example.net"]
        certificate = "../var/tls/cert.pem"
        key = "../var/tls/key.pem"
        [[tls.sni]]
        names = ["bad name", "*.ok.example"]
        certificate = "missing.pem"
        key = "../var/tls/key.pem"
        """,
    )
    file = conf.file("20-tls.toml")
    assert errors_of(conf) == [
        f"{file}: tls.sni[1].names: expected a non-empty list of host names such as "
        '"mail.example.org" or "*.example.org" (got an array)',
        f"{file}: tls.sni[1].certificate: expected an existing file "
        f'(got "{conf.path / "missing.pem"}")',
    ]


def test_disabled_tls_listener_needs_no_certificate(conf) -> None:
    conf.write("10-l.toml", '[listeners.mta]\nport = 25\ntls_mode = "starttls"\nenabled = false\n')
    assert not load_config(conf.path).listeners["mta"].enabled


def test_tls_listener_with_override_certificate_only(conf) -> None:
    conf.make_certificate()
    conf.write(
        "10-l.toml",
        """
        [listeners.mta]
        port = 25
        tls_mode = "implicit"
        [listeners.mta.tls]
        certificate = "../var/tls/cert.pem"
        key = "../var/tls/key.pem"
        [listeners.plain]
        port = 26
        """,
    )
    config = load_config(conf.path)
    assert config.listeners["mta"].tls.key == str(conf.root / "var/tls/key.pem")
    assert config.tls.certificate == ""


def test_missing_certificate_file_is_an_error(conf) -> None:
    conf.write("20-tls.toml", '[tls]\ncertificate = "../var/tls/cert.pem"\nkey = "/nonexistent"\n')
    file = conf.file("20-tls.toml")
    cert = conf.root / "var" / "tls" / "cert.pem"
    assert errors_of(conf) == [  # the message shows where it looked
        f'{file}: tls.certificate: expected an existing file (got "{cert}")',
        f'{file}: tls.key: expected an existing file (got "/nonexistent")',
    ]


def test_certificate_without_key_is_an_error(conf) -> None:
    conf.make_certificate()
    conf.write("20-tls.toml", '[tls]\ncertificate = "../var/tls/cert.pem"\n')
    assert errors_of(conf) == [
        f"{conf.file('20-tls.toml')}: tls.key: expected a key file to go with "
        "tls.certificate (got nothing)"
    ]


def test_relative_paths_resolve_against_the_file_not_the_cwd(conf, tmp_path, monkeypatch) -> None:
    conf.make_certificate()
    conf.write(
        "20-tls.toml",
        '[tls]\ncertificate = "../var/tls/cert.pem"\nkey = "../var/tls/key.pem"\n',
    )
    conf.write(
        "40-queue.toml",
        '[queue]\ndirectory = "../var/spool"\n[logging]\ndestination = "file"\nfile = "log"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(conf.path))  # a relative config dir, too
    assert config.tls.certificate == str(conf.root / "var" / "tls" / "cert.pem")
    assert config.queue.directory == str(conf.root / "var" / "spool")
    assert config.logging.file == str(conf.path / "log")
    assert os.path.isabs(config.tls.key)


def test_absolute_paths_are_kept(conf) -> None:
    conf.write("40-queue.toml", '[queue]\ndirectory = "/srv/spool"\n')
    assert load_config(conf.path).queue.directory == "/srv/spool"


def test_log_file_is_required_for_file_destination(conf) -> None:
    conf.write("00-log.toml", '[logging]\ndestination = "file"\n')
    assert errors_of(conf) == [
        f"{conf.file('00-log.toml')}: logging.file: expected a log file path when "
        'destination includes "file" (got nothing)'
    ]


def test_strict_types_no_coercion(conf) -> None:
    conf.write(
        "00-server.toml",
        """
        [server]
        hostname = 42
        max_sessions = 10.5
        workers = true
        [smtp]
        vrfy = 1
        [logging]
        syslog_facility = "email"
        """,
    )
    file = conf.file("00-server.toml")
    assert errors_of(conf) == [
        f"{file}: server.hostname: expected a string (got 42)",
        f"{file}: server.max_sessions: expected an integer of at least 1 (got 10.5)",
        f"{file}: server.workers: expected an integer of at least 0 (got true)",
        f"{file}: smtp.vrfy: expected true or false (got 1)",
        f'{file}: logging.syslog_facility: expected a syslog facility such as "mail" or '
        '"local0" (got "email")',
    ]


# --- unknown keys --------------------------------------------------------------------


def test_unknown_top_level_table(conf) -> None:
    conf.write("30-access.toml", "[access]\nallow = []\n")
    assert errors_of(conf) == [
        f"{conf.file('30-access.toml')}: access: unknown key 'access' (expected one of: "
        "auth, delivery, dns, limits, listeners, logging, metrics, plugins, queue, server, "
        "smtp, tls)"
    ]


def test_unknown_nested_key(conf) -> None:
    conf.write("30-limits.toml", "[limits]\nmax_recipient = 10\n")
    assert errors_of(conf) == [
        f"{conf.file('30-limits.toml')}: limits.max_recipient: unknown key 'max_recipient' "
        "(expected one of: command_timeout, data_timeout, max_bad_commands, "
        "max_header_size, max_message_line_length, max_message_size, max_messages_per_session, "
        "max_received_headers, max_recipients, message_timeout, recipient_overshoot, "
        "session_timeout)"
    ]


def test_unknown_listener_key(conf) -> None:
    conf.write("10-l.toml", '[listeners.mta]\nport = 25\nadress = "::"\n')
    assert errors_of(conf) == [
        f"{conf.file('10-l.toml')}: listeners.mta.adress: unknown key 'adress' (expected "
        "one of: address, auth, banner, enabled, limits, max_sessions, port, proxy_protocol, "
        "proxy_timeout, proxy_trusted_networks, smtp, tls, tls_mode)"
    ]


def test_unknown_key_in_listener_override_names_the_later_file(conf) -> None:
    conf.write("10-l.toml", "[listeners.mta]\nport = 25\n")
    conf.write("60-local.toml", "[listeners.mta.smtp]\nverify = true\n")
    assert errors_of(conf) == [
        f"{conf.file('60-local.toml')}: listeners.mta.smtp.verify: unknown key 'verify' "
        "(expected one of: bare_linefeed, expn, received_header, vrfy, xclient_hosts, "
        "xforward_hosts)"
    ]


def test_unknown_key_in_plugin_table(conf) -> None:
    conf.write("50-plugins.toml", "[plugins.spool]\nprio = 5\n")
    assert errors_of(conf) == [
        f"{conf.file('50-plugins.toml')}: plugins.spool.prio: unknown key 'prio' "
        "(expected one of: enabled, mode, priority)"
    ]


def test_all_errors_are_collected_across_files(conf) -> None:
    conf.write("10-a.toml", "[server]\nworkers = -1\n[listeners.mta]\nport = 0\n")
    conf.write("20-b.toml", "[limits]\nmax_recipients = 0\n[rules]\n")
    conf.write("30-c.toml", '[plugins.spool]\nmode = "audit"\n')
    errors = errors_of(conf)
    assert [line.split(": ")[:2] for line in errors] == [
        [conf.file("20-b.toml"), "rules"],
        [conf.file("10-a.toml"), "server.workers"],
        [conf.file("20-b.toml"), "limits.max_recipients"],
        [conf.file("10-a.toml"), "listeners.mta.port"],
        [conf.file("30-c.toml"), "plugins.spool.mode"],
    ]


def test_config_error_str_joins_the_lines() -> None:
    error = ConfigError(["a: x: one", "b: y: two"])
    assert str(error) == "a: x: one\nb: y: two"
    assert error.errors == ["a: x: one", "b: y: two"]


# --- plugins -------------------------------------------------------------------------


def test_every_installed_plugin_gets_a_config(conf) -> None:
    conf.write("50-plugins.toml", "[plugins.spool]\npriority = 1000\n")
    plugins = load_config(conf.path, PLUGINS).plugins
    assert set(plugins) == {"greylist", "spool"}
    assert plugins["spool"] == PluginConfig(priority=1000)
    assert plugins["greylist"] == GreylistConfig()  # not configured: all defaults
    assert type(plugins["greylist"]) is GreylistConfig


def test_plugin_own_fields_are_validated(conf) -> None:
    conf.write(
        "50-plugins.toml",
        """
        [plugins.greylist]
        enabled = false
        priority = 10
        mode = "monitor"
        max_size = "512 KiB"
        action = "reject"
        retries = 5
        networks = ["192.0.2.0/24"]
        database = "greylist.db"
        """,
    )
    greylist = load_config(conf.path, PLUGINS).plugins["greylist"]
    assert (greylist.enabled, greylist.priority, greylist.mode) == (False, 10, "monitor")
    assert (greylist.max_size, greylist.action, greylist.retries) == (512 * 1024, "reject", 5)
    assert greylist.networks == ["192.0.2.0/24"]
    assert greylist.database == str(conf.path / "greylist.db")


def test_plugin_field_errors(conf) -> None:
    conf.write(
        "50-plugins.toml",
        """
        [plugins.greylist]
        priority = "high"
        action = "drop"
        retries = 10
        networks = "192.0.2.0/24"
        routes = [{ domain = "a.example" }]
        """,
    )
    file = conf.file("50-plugins.toml")
    assert errors_of(conf) == [
        f'{file}: plugins.greylist.priority: expected an integer (got "high")',
        f'{file}: plugins.greylist.action: expected one of "reject", "tmpreject" (got "drop")',
        f"{file}: plugins.greylist.retries: expected an integer from 1 to 9 (got 10)",
        f'{file}: plugins.greylist.networks: expected an array (got "192.0.2.0/24")',
        f"{file}: plugins.greylist.routes[0].host: missing required key (expected a string)",
    ]


def test_unknown_plugin_lists_the_installed_ones(conf) -> None:
    conf.write("50-plugins.toml", "[plugins.spf]\nenabled = true\n")
    assert errors_of(conf) == [
        f"{conf.file('50-plugins.toml')}: plugins.spf: unknown plugin 'spf' "
        "(installed: greylist, spool)"
    ]
    assert errors_of(conf, {}) == [
        f"{conf.file('50-plugins.toml')}: plugins.spf: unknown plugin 'spf' (installed: none)"
    ]


def test_plugin_with_a_required_key_left_unconfigured(conf) -> None:
    conf.write("00-empty.toml", "")
    assert errors_of(conf, {"needs": NeedsKeyConfig}) == [
        f"{conf.path}: plugins.needs.server: missing required key (expected a string)"
    ]


def test_plugin_attrs_validator_errors_are_reported_too(conf) -> None:
    conf.write("50-plugins.toml", "[plugins.strict]\nlevel = 50\n")
    [error] = errors_of(conf, {"strict": ValidatorConfig})
    assert error.startswith(f"{conf.file('50-plugins.toml')}: plugins.strict: invalid value (")
    assert "'level' must be <= 10: 50" in error


def test_plugin_schema_must_subclass_plugin_config(conf) -> None:
    conf.write("00-empty.toml", "")
    with pytest.raises(TypeError, match="must subclass PluginConfig"):
        load_config(conf.path, {"bad": Limits})  # type: ignore[dict-item]


# --- the schema classes themselves ---------------------------------------------------


def test_schema_classes_are_frozen_and_keyword_only() -> None:
    for cls in (AppConfig, Server, Listener, Tls, Limits, Smtp, Queue, Logging, PluginConfig):
        assert attrs.has(cls)
        assert cls.__setattr__ is not object.__setattr__, f"{cls.__name__} is not frozen"
        assert all(f.kw_only for f in attrs.fields(cls)), f"{cls.__name__} has positional fields"


def test_appconfig_sources_are_paths(conf) -> None:
    conf.write("00-a.toml", "")
    assert all(isinstance(p, Path) for p in load_config(conf.path).sources)
