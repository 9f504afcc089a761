"""Real Redis topologies for the shared counters' tests, each on free loopback ports
in its own directory: a master with a replica and a Sentinel (redis-sentinel), a
3-node Redis Cluster (redis-server --cluster-enabled yes, then redis-cli --cluster
create), and a Redis that speaks only TLS and wants a client certificate (Debian's
redis-server is built with TLS). Stopped at the end of the test session."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.peers import free_port, stop_process

SERVICE = "mymaster"


def _binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed: run `make deps-system`")
    return found


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, directory: Path, *args: str, binary: str = "redis-server") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        log = open(directory / "log", "ab")
        self.procs.append(subprocess.Popen(
            [_binary(binary), *args, "--dir", str(directory), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
             "--bind", "127.0.0.1", "--loglevel", "warning"],
            stdout=log, stderr=subprocess.STDOUT, cwd=directory))
        log.close()

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def wait_until(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} not ready within {timeout} s")


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory):
    """{"nodes": ["127.0.0.1:PORT"], "service": SERVICE, "master": port, "replica": port}:
    a master, a replica of it and one Sentinel (quorum 1) watching them."""
    root = tmp_path_factory.mktemp("sentinel")
    master, replica, sentinel = free_port(), free_port(), free_port()
    procs = Processes()
    procs.start(root / "master", "--port", str(master))
    procs.start(root / "replica", "--port", str(replica),
                "--replicaof", "127.0.0.1", str(master))
    conf = root / "sentinel" / "sentinel.conf"
    conf.parent.mkdir()
    conf.write_text(f"port {sentinel}\nsentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
                    f"sentinel down-after-milliseconds {SERVICE} 5000\n"
                    f"sentinel failover-timeout {SERVICE} 5000\n")
    procs.start(root / "sentinel", str(conf), "--sentinel", binary="redis-server")
    watcher = redis.Redis(port=sentinel, socket_timeout=1, decode_responses=True)
    wait_until(lambda: watcher.sentinel_master(SERVICE)["num-slaves"] >= 1,
               "the Sentinel seeing the replica")
    yield {"nodes": [f"127.0.0.1:{sentinel}"], "service": SERVICE, "master": master,
           "replica": replica, "sentinel": watcher}
    watcher.close()
    procs.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """["127.0.0.1:PORT", ...]: a Redis Cluster of 3 masters, all slots covered."""
    root = tmp_path_factory.mktemp("cluster")
    ports = [free_port() for _ in range(3)]
    procs = Processes()
    for port in ports:
        procs.start(root / str(port), "--port", str(port), "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
    nodes = [f"127.0.0.1:{port}" for port in ports]
    clients = [redis.Redis(port=port, socket_timeout=1, decode_responses=True)
               for port in ports]
    wait_until(lambda: all(c.ping() for c in clients), "the cluster nodes")
    created = subprocess.run([_binary("redis-cli"), "--cluster", "create", *nodes,
                              "--cluster-replicas", "0", "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
    if created.returncode != 0:
        pytest.fail(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
    wait_until(lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients),
               "cluster_state:ok on every node")
    yield nodes
    for c in clients:
        c.close()
    procs.stop()


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory):
    """{"url": "rediss://127.0.0.1:PORT/0", "ca", "certificate", "key"}: a Redis that
    speaks TLS only and wants a client certificate (from the same test CA)."""
    import trustme

    root = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("smtp-appliance.test")
    paths = {name: root / f"{name}.pem" for name in
             ("ca", "server-cert", "server-key", "certificate", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["server-cert"])
    server.private_key_pem.write_to_path(paths["server-key"])
    client.cert_chain_pems[0].write_to_path(paths["certificate"])
    client.private_key_pem.write_to_path(paths["key"])
    port = free_port()
    procs = Processes()
    procs.start(root / "data", "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(paths["server-cert"]),
                "--tls-key-file", str(paths["server-key"]),
                "--tls-ca-cert-file", str(paths["ca"]), "--tls-auth-clients", "yes")
    probe = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(paths["ca"]),
                        ssl_certfile=str(paths["certificate"]), ssl_keyfile=str(paths["key"]),
                        socket_timeout=1)
    wait_until(probe.ping, "the TLS redis-server")
    probe.close()
    yield {"url": f"rediss://127.0.0.1:{port}/0", "port": port,
           **{k: str(v) for k, v in paths.items()}}
    procs.stop()
