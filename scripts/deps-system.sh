#!/usr/bin/env bash
# Install the Debian packages the tests and the benchmark need, without ever
# starting the system Postfix. Idempotent: when every package is already
# installed it does nothing at all (not even `apt-get update`).
#
#   scripts/deps-system.sh [--dry-run] [PACKAGE...]   (default: the list below)
set -euo pipefail

dry_run=
if [ "${1:-}" = --dry-run ]; then
    dry_run=1
    shift
fi
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    # postfix: smtp-source and the benchmark's reference smtpd; redis-server: the
    # shared counters' tests; swaks with libnet-ssleay-perl (its TLS) and
    # libauthen-sasl-perl, libdigest-hmac-perl (its DIGEST-MD5 and CRAM-MD5);
    # dovecot-core: the Dovecot SASL tests start a private dovecot;
    # dovecot-lmtpd: the delivery tests' and bench/delivery.py's LMTP next hop;
    # libsasl2-modules: the Cyrus SASL client mechanisms of the Postfix relay test;
    # krb5-kdc, krb5-admin-server, krb5-user: the GSSAPI tests' private MIT KDC;
    # libkrb5-dev, gcc: to build python-gssapi (the gssapi extra); gcc also builds
    # the fault-injection shim of tests/integration/test_faults.py;
    # unbound: the sender checks' tests serve their DNS zones with it;
    # postgrey: the policy delegation tests' real policy server;
    # opendkim, clamav-daemon, clamav-milter: the milter tests' real milters
    # (started by the tests; the test clamd uses a database written at set-up);
    # debhelper, python3.11-venv: `make package` builds the .deb (dpkg-buildpackage);
    # rpm: its rpmbuild builds the .rpm; lintian: the package test checks the .deb;
    # haproxy: the scale-out tests' load balancer (PROXY protocol, SMTP checks);
    # redis-sentinel: the shared counters' Sentinel tests.
    packages=(postfix swaks openssl procps redis-server libnet-ssleay-perl
              libauthen-sasl-perl libdigest-hmac-perl dovecot-core dovecot-lmtpd
              libsasl2-modules
              krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc unbound postgrey
              opendkim clamav-daemon clamav-milter debhelper python3.11-venv rpm lintian
              haproxy redis-sentinel)
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
    sudo=(sudo)
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

system_postfix_master() {
    # Print the pid of the *system* Postfix master (queue /var/spool/postfix), if running.
    local pidfile=/var/spool/postfix/pid/master.pid pid
    [ -r "$pidfile" ] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'postfix/sbin/master'; then
        echo "$pid"
    fi
}

port25_listeners() {
    # Sockets in LISTEN state (0A) on local port 25 (0x0019), IPv4 or IPv6.
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \
        | awk '$2 ~ /:0019$/ && $4 == "0A" { print "listening:", $2 }'
}

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps-system: already installed: ${packages[*]}"
else
    echo "deps-system: installing: ${missing[*]}"
    if [ -n "$dry_run" ]; then
        echo "deps-system: dry run: would run apt-get update and apt-get install -y ${missing[*]}"
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # "No configuration": the postinst writes no main.cf and starts no mail service.
    echo "postfix postfix/main_mailer_type select No configuration" \
        | "${sudo[@]}" debconf-set-selections
    # Wait for a concurrent apt/dpkg run instead of failing on its lock.
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900)
    "${apt[@]}" update
    "${apt[@]}" install -y "${missing[@]}"

    # We installed it: make sure the system instance is not running.
    pid=$(system_postfix_master)
    if [ -n "$pid" ]; then
        echo "deps-system: stopping the system Postfix (master pid $pid)"
        "${sudo[@]}" postfix stop || "${sudo[@]}" kill "$pid"
    fi
    if [ -n "$(port25_listeners)" ]; then
        echo "deps-system: ERROR: something listens on port 25 after the install:" >&2
        port25_listeners >&2
        exit 1
    fi
fi

# Not ours to stop when we did not install it (it may be the developer's MTA),
# but say so: the tests and the benchmark never use port 25.
if [ -n "$(system_postfix_master)" ] || [ -n "$(port25_listeners)" ]; then
    echo "deps-system: note: a mail server is listening on port 25 (not used by tests/bench)" >&2
fi
