"""The Redis client of ``[server.state]``: one server, a Sentinel-managed master, or a
Redis Cluster, each optionally over TLS (docs/configuration.md, ``[server.state]``;
docs/scaling.md). redis-py does the work: Sentinel discovery and failover
(``Sentinel.master_for``), Cluster slot routing and redirections (``RedisCluster``).

Every connection has the ``timeout`` and no retry of its own: the counters decide
when to try again (``retry_interval``) and what to do meanwhile (fail open or closed).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from appliance.config import State

__all__ = ["connect", "key_prefix"]


def connect(settings: State) -> tuple[Any, str]:
    """(client, where: how to name it in log lines)."""
    timeout = float(settings.timeout)
    common: dict[str, Any] = dict(
        socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0), health_check_interval=0, decode_responses=True)
    tls = _tls(settings)
    if settings.redis_mode == "sentinel":
        nodes = [_host_port(node) for node in settings.redis_nodes]
        sentinel = Sentinel(nodes, sentinel_kwargs=dict(
            socket_timeout=timeout, socket_connect_timeout=timeout, **tls), **common, **tls)
        where = f"sentinel:{settings.redis_service}@" + ",".join(settings.redis_nodes)
        return sentinel.master_for(settings.redis_service, **common, **tls), where
    if settings.redis_mode == "cluster":
        nodes = [ClusterNode(*_host_port(node)) for node in settings.redis_nodes]
        client = RedisCluster(startup_nodes=nodes, **common, **tls)
        return client, "cluster:" + ",".join(settings.redis_nodes)
    url = settings.redis_url
    if settings.redis_tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    tls.pop("ssl", None)  # the URL's scheme says it
    client = redis.Redis.from_url(url, retry_on_timeout=False, **common,
                                  **(tls if url.startswith("rediss://") else {}))
    return client, _where(url)


def key_prefix(settings: State) -> str:
    """The prefix of every key. In a Cluster it is a hash tag, so every key lands in
    one slot: the scripts read several keys at once (a gauge and the heartbeats of
    the processes holding it), which Redis Cluster allows only within one slot."""
    if settings.redis_mode == "cluster":
        return "{" + settings.key_prefix + "}"
    return settings.key_prefix


def _tls(settings: State) -> dict[str, Any]:
    if not (settings.redis_tls or settings.redis_url.startswith("rediss://")):
        return {}
    tls: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if settings.redis_tls_ca:
        tls["ssl_ca_certs"] = str(settings.redis_tls_ca)
    if settings.redis_tls_certificate:
        tls["ssl_certfile"] = str(settings.redis_tls_certificate)
        tls["ssl_keyfile"] = str(settings.redis_tls_key or settings.redis_tls_certificate)
    return tls


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


def _where(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.hostname}:{parts.port or 6379}"
