"""check_config and describe_listener: what `smtp-appliance check-config` prints."""

from __future__ import annotations

import pytest

from appliance.config import check_config, describe_listener, load_config

from .plugin_fixtures import PLUGINS


@pytest.fixture
def configured(conf):
    conf.make_certificate()
    conf.write(
        "00-server.toml",
        '[server]\nworkers = 4\n[logging]\nlevel = "debug"\nformat = "json"\n',
    )
    conf.write(
        "10-listeners.toml",
        """
        [listeners.mta]
        address = "0.0.0.0"
        port = 25
        tls_mode = "starttls"

        [listeners.submission]
        address = "::1"
        port = 587
        tls_mode = "implicit"
        max_sessions = 20

        [listeners.submission.limits]
        max_message_size = "50 MiB"

        [listeners.old]
        port = 2500
        enabled = false
        """,
    )
    conf.write(
        "20-tls.toml", '[tls]\ncertificate = "../var/tls/cert.pem"\nkey = "../var/tls/key.pem"\n'
    )
    conf.write("30-limits.toml", '[limits]\nmax_recipients = 100\ncommand_timeout = "5m"\n')
    conf.write("40-queue.toml", '[queue]\ndirectory = "../var/spool"\nfsync = false\n')
    conf.write(
        "50-plugins.toml",
        '[plugins.spool]\npriority = 1000\n[plugins.greylist]\nmode = "monitor"\nenabled = false\n',
    )
    return conf


def test_check_config_success_summary(configured) -> None:
    status, text = check_config(configured.path, PLUGINS)
    assert status == 0
    lines = text.splitlines()
    assert lines[0] == "configuration OK (6 files)"
    files = [line.strip() for line in lines if line.strip().startswith(str(configured.path))]
    assert files == [
        configured.file(name)
        for name in (
            "00-server.toml",
            "10-listeners.toml",
            "20-tls.toml",
            "30-limits.toml",
            "40-queue.toml",
            "50-plugins.toml",
        )
    ]
    assert any(line.split() == ["mta", "0.0.0.0:25", "tls", "starttls"] for line in lines), text
    assert any(line.split() == ["submission", "[::1]:587", "tls", "implicit"] for line in lines)
    assert any(
        line.split() == ["old", "127.0.0.1:2500", "tls", "none", "(disabled)"] for line in lines
    )
    spool = configured.root / "var" / "spool"
    assert f"spool directory: {spool} (fsync OFF: accepted mail may be lost)" in lines
    assert "logging: level debug, format json, to stderr" in lines
    assert "metrics: endpoint off" in lines
    assert "server: hostname (machine FQDN), max_sessions 10000, workers 4" in lines
    # plugins in run order (priority, then name), each with enabled/priority/mode
    plugin_lines = lines[lines.index("plugins, in run order:") + 1 :]
    assert [line.split() for line in plugin_lines] == [
        ["greylist", "disabled", "priority", "100", "mode", "monitor"],
        ["spool", "enabled", "priority", "1000", "mode", "enforce"],
    ]


def test_check_config_without_plugins_says_so(conf) -> None:
    conf.write("00-a.toml", "")
    status, text = check_config(conf.path)
    assert status == 0
    assert "plugins: none installed" in text.splitlines()
    assert "default" in text and "127.0.0.1:25" in text


def test_check_config_failure_prints_every_error(conf) -> None:
    conf.write("10-a.toml", "[limits]\nmax_recipients = 0\n[server]\nworkers = -1\n")
    status, text = check_config(conf.path)
    assert status == 1
    assert text.splitlines() == [
        f"{conf.file('10-a.toml')}: server.workers: expected an integer of at least 0 (got -1)",
        f"{conf.file('10-a.toml')}: limits.max_recipients: expected an integer of at least 1 "
        "(got 0)",
    ]


def test_check_config_reports_syntax_errors(conf) -> None:
    conf.write("10-a.toml", "[limits\n")
    status, text = check_config(conf.path)
    assert (status, text.split(": ")[0]) == (1, f"{conf.file('10-a.toml')}:1:8")


def test_check_config_missing_dir(tmp_path) -> None:
    assert check_config(tmp_path / "none") == (
        1,
        f"{tmp_path / 'none'}: config directory does not exist",
    )


def test_describe_listener_shows_effective_values_and_their_origin(configured) -> None:
    config = load_config(configured.path, PLUGINS)
    text = describe_listener(config, "submission")
    lines = dict(
        (part.strip() for part in line.rsplit("  # ", 1))
        for line in text.splitlines()
        if " = " in line and not line.startswith("#")
    )
    listeners, limits = configured.file("10-listeners.toml"), configured.file("30-limits.toml")
    assert lines['address = "::1"'] == listeners
    assert lines["max_sessions = 20"] == listeners
    assert lines["enabled = true"] == "default"
    assert lines['banner = "#HostName# ESMTP smtp-appliance"'] == "from server.banner, default"
    assert lines['max_message_size = "50 MiB"'] == f"listener override, {listeners}"
    assert lines["max_recipients = 100"] == f"[limits], {limits}"
    assert lines['command_timeout = "5m"'] == f"[limits], {limits}"
    assert lines['data_timeout = "2m"'] == "[limits], default"
    assert lines['certificate = "' + str(configured.root / "var/tls/cert.pem") + '"'] == (
        f"[tls], {configured.file('20-tls.toml')}"
    )
    assert lines["vrfy = false"] == "[smtp], default"


def test_describe_listener_is_toml_that_loads_back_to_the_same_values(configured) -> None:
    config = load_config(configured.path, PLUGINS)
    original = config.listeners["submission"]
    printed = configured.root / "printed"
    printed.mkdir()
    (printed / "10-printed.toml").write_text(describe_listener(config, "submission"))
    reloaded = load_config(printed).listeners["submission"]
    assert (reloaded.address, reloaded.port, reloaded.tls_mode, reloaded.max_sessions) == (
        original.address,
        original.port,
        original.tls_mode,
        original.max_sessions,
    )
    assert reloaded.limits == original.limits
    assert reloaded.smtp == original.smtp
    assert reloaded.tls == original.tls
    assert reloaded.banner == config.server.banner


def test_describe_listener_without_own_cap_names_the_server_cap(configured) -> None:
    config = load_config(configured.path, PLUGINS)
    text = describe_listener(config, "mta")
    assert "# max_sessions not set: only server.max_sessions (10000) applies" in text.splitlines()
    assert 'max_message_size = "10 MiB"' in text  # the global default, not submission's


def test_describe_unknown_listener(configured) -> None:
    config = load_config(configured.path, PLUGINS)
    with pytest.raises(
        KeyError, match="no listener named 'nope' .configured: mta, submission, old."
    ):
        describe_listener(config, "nope")
