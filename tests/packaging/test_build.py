"""`make package`: the .deb and the .rpm hold the same files, and lintian finds no
error in the .deb (its warnings are the ones packaging/README.md lists)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import ROOT, deb

# Building the packages once per session (`make package`) takes about two minutes.
pytestmark = pytest.mark.timeout(900)

UNIT = "smtp-appliance.service"


def output(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def deb_files(packages) -> set[str]:
    """Every path in the .deb (symbolic links by their own name)."""
    return {line.split(maxsplit=5)[5].split(" -> ")[0].removeprefix(".").rstrip("/")
            for line in output("dpkg-deb", "-c", str(deb(packages))).splitlines()}


def test_the_deb_holds_the_documented_layout(packages):
    files = deb_files(packages)
    for path in ["/usr/bin/smtp-appliance", "/usr/bin/smtp-appliance-pip",
                 "/opt/smtp-appliance/bin/smtp-appliance",
                 "/opt/smtp-appliance/constraints.txt",
                 "/etc/smtp-appliance/conf.d/00-server.toml",
                 "/etc/smtp-appliance/conf.d/10-listeners.toml",
                 f"/lib/systemd/system/{UNIT}", "/etc/logrotate.d/smtp-appliance",
                 "/usr/share/man/man8/smtp-appliance.8.gz",
                 "/usr/share/man/man5/smtp-appliance.conf.5.gz",
                 "/var/spool/smtp-appliance", "/var/lib/smtp-appliance",
                 "/var/log/smtp-appliance"]:
        assert path in files, path
    assert not any("__pycache__" in f for f in files)  # compiled at install


@pytest.mark.skipif(not shutil.which("rpmbuild"), reason="rpmbuild is not installed")
def test_the_rpm_has_the_layout_of_the_deb(packages):
    (rpm,) = packages.glob("smtp-appliance-*.rpm")
    in_rpm = set(output("rpm", "-qlp", str(rpm)).splitlines())
    # What the package owns (not /var/lib itself); the unit directory of each
    # distribution differs, and so do the documentation files.
    ours = ("/opt/smtp-appliance", "/etc/smtp-appliance", "/var/spool/smtp-appliance",
            "/var/lib/smtp-appliance", "/var/log/smtp-appliance", "/usr/share/smtp-appliance",
            "/usr/bin/", "/etc/logrotate.d/", "/lib/systemd/system/", "/usr/share/man/man5/",
            "/usr/share/man/man8/")
    in_deb = {p.replace("/lib/systemd/system/", "/usr/lib/systemd/system/")
              for p in deb_files(packages) if p.startswith(ours)}
    assert in_deb <= in_rpm, sorted(in_deb - in_rpm)[:20]
    assert "useradd -r -g smtp-appliance" in output("rpm", "-qp", "--scripts", str(rpm))
    owners = output("rpm", "-qp", "--qf",
                    "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]", str(rpm))
    assert "drwxr-x--- smtp-appliance /var/spool/smtp-appliance\n" in owners
    assert "drwxr-x--- smtp-appliance /var/lib/smtp-appliance\n" in owners


@pytest.mark.skipif(not shutil.which("lintian"), reason="lintian is not installed")
def test_lintian_finds_no_error(packages):
    done = subprocess.run(["lintian", "--fail-on", "error", str(deb(packages))],
                          capture_output=True, text=True, timeout=300)
    tags = re.findall(r"^([EW]): smtp-appliance: ([a-z0-9-]+)", done.stdout, re.M)
    assert done.returncode == 0 and not [t for level, t in tags if level == "E"], done.stdout
    listed = (ROOT / "packaging" / "README.md").read_text()
    unlisted = {t for level, t in tags if level == "W" and f"`{t}`" not in listed}
    assert not unlisted, f"lintian warnings not explained in packaging/README.md: {unlisted}"
