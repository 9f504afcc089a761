"""packaging/make-conf.py: the packaged conf.d is the repository's with the
packaged settings, and a conf.d change it no longer matches stops the build."""

from __future__ import annotations

import importlib.util
import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("make_conf", ROOT / "packaging" / "make-conf.py")
make_conf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_conf)


def test_the_packaged_conf_d(tmp_path):
    assert make_conf.make(ROOT / "conf.d", tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(p.name for p in (ROOT / "conf.d").glob("*.toml"))
    listeners = tomllib.loads((tmp_path / "10-listeners.toml").read_text())["listeners"]
    assert {n: (lr["address"], lr["port"]) for n, lr in listeners.items()} == {
        "mta": ("0.0.0.0", 25), "submission": ("0.0.0.0", 587),
        "submissions": ("0.0.0.0", 465)}
    server = tomllib.loads((tmp_path / "00-server.toml").read_text())["server"]
    assert (server["user"], server["group"]) == ("smtp-appliance", "smtp-appliance")
    tls = tomllib.loads((tmp_path / "20-tls.toml").read_text())["tls"]
    assert tls["key"] == "/etc/smtp-appliance/tls/key.pem"
    queue = tomllib.loads((tmp_path / "40-queue.toml").read_text())["queue"]
    assert queue["directory"] == "/var/spool/smtp-appliance"


def test_a_setting_that_no_longer_matches_stops_the_build(tmp_path):
    source = tmp_path / "conf.d"
    shutil.copytree(ROOT / "conf.d", source)
    listeners = source / "10-listeners.toml"
    listeners.write_text(listeners.read_text().replace("port = 2587", "port = 2588"))
    problems = make_conf.make(source, tmp_path / "out")
    assert len(problems) == 1 and problems[0].startswith(f"{listeners}: expected this text once")
    assert 'port = 2587' in problems[0]
    assert not (tmp_path / "out").exists()
