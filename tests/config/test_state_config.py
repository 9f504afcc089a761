"""``[server.state]``: the counters store's keys, validated like every core table."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, load_config


@pytest.mark.parametrize("url", ["redis://127.0.0.1", "redis://:secret@mx-redis:6380/3",
                                 "rediss://redis.example:6379/0", "unix:///run/redis.sock?db=1"])
def test_redis_url_forms(conf, url: str) -> None:
    conf.write("10-state.toml", f'[server.state]\nredis_url = "{url}"\n')
    assert load_config(conf.path).server.state.redis_url == url


def test_redis_settings_are_read(conf) -> None:
    conf.write("10-state.toml", """
        [server.state]
        backend = "redis"
        redis_url = "redis://10.0.0.5:6380/2"
        key_prefix = "mx1:"
        timeout = "100ms"
        retry_interval = "2s"
        max_keys = 5000
    """)
    state = load_config(conf.path).server.state
    assert (state.backend, state.redis_url, state.key_prefix) == (
        "redis", "redis://10.0.0.5:6380/2", "mx1:")
    assert (float(state.timeout), float(state.retry_interval), state.max_keys) == (
        0.1, 2.0, 5000)


@pytest.mark.parametrize(("line", "expected"), [
    ('backend = "memcached"', "server.state.backend: expected one of"),
    ('redis_url = "127.0.0.1:6379"', 'server.state.redis_url: expected a URL such as'),
    ('redis_url = "redis://127.0.0.1:port/0"', "server.state.redis_url: expected a URL"),
    ('redis_url = "redis://127.0.0.1:6379/zero"', "server.state.redis_url: expected a URL"),
    ('redis_url = "redis:///0"', "server.state.redis_url: expected a URL"),
    ("timeout = 1", "server.state.timeout: expected a duration"),
    ('timeout = "0s"', "server.state.timeout: expected a duration longer than 0s"),
    ("max_keys = 10", "server.state.max_keys: expected an integer of at least 1000"),
    ("maxkeys = 10", "server.state.maxkeys: unknown key"),
    ('redis_mode = "replicated"', "server.state.redis_mode: expected one of"),
    ('redis_mode = "sentinel"', 'server.state.redis_nodes: expected the Sentinels as "host:port"'),
    ('redis_mode = "cluster"', 'server.state.redis_nodes: expected the seed nodes'),
    ('redis_nodes = ["10.0.0.5"]', 'server.state.redis_nodes[0]: expected a "host:port"'),
    ('redis_tls_ca = "/nonexistent/ca.pem"', "server.state.redis_tls_ca: expected an existing"),
])
def test_errors_name_file_key_and_expectation(conf, line: str, expected: str) -> None:
    conf.write("10-state.toml", f"[server.state]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert any(e.startswith(conf.file("10-state.toml") + ": " + expected)
               for e in caught.value.errors), caught.value.errors


def test_sentinel_and_cluster_settings_are_read(conf) -> None:
    conf.write("10-state.toml", """
        [server.state]
        backend = "redis"
        redis_mode = "sentinel"
        redis_nodes = ["10.0.0.5:26379", "[2001:db8::5]:26379"]
        redis_service = "counters"
        redis_tls = true
    """)
    state = load_config(conf.path).server.state
    assert (state.redis_mode, state.redis_nodes, state.redis_service, state.redis_tls) == (
        "sentinel", ["10.0.0.5:26379", "[2001:db8::5]:26379"], "counters", True)
