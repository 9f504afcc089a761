"""The packaged /etc/smtp-appliance/conf.d, made from the repository's conf.d at
package build time: the same commented files, with the few settings a developer
runs on (loopback, high ports, paths under the repository) changed to what an
installed server uses. Each change names the exact text it replaces, so a change of
conf.d/ that one of them no longer matches stops the package build instead of
shipping a stale setting.

    python3 packaging/make-conf.py SOURCE_CONF_D DEST_CONF_D
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGED = {
    "00-server.toml": [
        ('user = ""\ngroup = ""\n', 'user = "smtp-appliance"\ngroup = "smtp-appliance"\n'),
    ],
    "10-listeners.toml": [
        ("# This example binds unprivileged ports on loopback so `make serve` runs without\n"
         '# root. On a real server use address = "0.0.0.0" (and/or "::") and the ports shown.\n',
         "# As packaged: every IPv4 address on the standard ports. For IPv6 add listeners\n"
         '# with address = "::" in a file of your own (50-local.toml).\n'),
        ('address = "127.0.0.1"\nport = 2525\n', 'address = "0.0.0.0"\nport = 25\n'),
        ('address = "127.0.0.1"\nport = 2587\n', 'address = "0.0.0.0"\nport = 587\n'),
        ('address = "127.0.0.1"\nport = 2465\n', 'address = "0.0.0.0"\nport = 465\n'),
    ],
    "20-tls.toml": [
        ('# directory), so "../var/tls/cert.pem" is <repository>/var/tls/cert.pem.\n'
         "# `make serve` generates a self-signed pair there on first run.\n",
         "# directory). The package made a self-signed pair for this machine's name at\n"
         "# install; put your own certificate and key in their place (the key readable by\n"
         "# the group smtp-appliance), or name yours in 50-local.toml.\n"),
        ('certificate = "../var/tls/cert.pem"\nkey = "../var/tls/key.pem"\n',
         'certificate = "/etc/smtp-appliance/tls/cert.pem"\n'
         'key = "/etc/smtp-appliance/tls/key.pem"\n'),
    ],
    "40-queue.toml": [
        ('directory = "../var/spool"\n', 'directory = "/var/spool/smtp-appliance"\n'),
    ],
}


def make(source: Path, dest: Path) -> list[str]:
    """Copy every ``*.toml`` of ``source`` to ``dest`` with the packaged settings;
    returns what did not match (nothing is written then)."""
    out, problems = {}, []
    for path in sorted(source.glob("*.toml")):
        text = path.read_text()
        for old, new in PACKAGED.get(path.name, []):
            if text.count(old) != 1:
                problems.append(f"{path}: expected this text once "
                                f"(found {text.count(old)}):\n{old}")
                continue
            text = text.replace(old, new)
        out[path.name] = text
    problems += [f"{source / name}: missing" for name in PACKAGED if name not in out]
    if not problems:
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in out.items():
            (dest / name).write_text(text)
    return problems


if __name__ == "__main__":
    problems = make(Path(sys.argv[1]), Path(sys.argv[2]))
    for line in problems:
        print(f"make-conf: {line}", file=sys.stderr)
    sys.exit(1 if problems else 0)
