#!/bin/sh
# Everything both packages install, into a package build tree DESTDIR; the Debian
# rules and the RPM spec call this, so the two packages have one layout
# (packaging/README.md lists it). Owners and modes of the spool, state and log
# directories are set by the packages' scripts (the system user does not exist at
# build time).
#
#   packaging/install.sh DESTDIR    (UNITDIR: where the systemd unit goes,
#                                    default /usr/lib/systemd/system)
set -eu

dest=$1
here=$(cd "$(dirname "$0")" && pwd)
source=$(dirname "$here")
prefix=/opt/smtp-appliance
unitdir=${UNITDIR:-/usr/lib/systemd/system}

"$here/build-venv.sh" "$dest" "$prefix" "$source"

install -d "$dest/usr/bin" "$dest/usr/share/smtp-appliance" \
    "$dest/etc/smtp-appliance/conf.d" "$dest/etc/logrotate.d" "$dest$unitdir" \
    "$dest/usr/share/man/man5" "$dest/usr/share/man/man8" \
    "$dest/var/spool/smtp-appliance" "$dest/var/lib/smtp-appliance" \
    "$dest/var/log/smtp-appliance"
ln -s "$prefix/bin/smtp-appliance" "$dest/usr/bin/smtp-appliance"
install -m 0755 "$here/smtp-appliance-pip" "$dest/usr/bin/smtp-appliance-pip"
install -m 0755 "$source/scripts/make-cert.sh" "$dest/usr/share/smtp-appliance/make-cert.sh"
python3 "$here/make-conf.py" "$source/conf.d" "$dest/etc/smtp-appliance/conf.d"
install -m 0644 "$here/smtp-appliance.service" "$dest$unitdir/smtp-appliance.service"
install -m 0644 "$here/smtp-appliance.logrotate" "$dest/etc/logrotate.d/smtp-appliance"
install -m 0644 "$here/man/smtp-appliance.8" "$here/man/smtp-appliance-pip.8" \
    "$dest/usr/share/man/man8/"
install -m 0644 "$here/man/smtp-appliance.conf.5" "$dest/usr/share/man/man5/"
install -d "$dest/usr/share/doc/smtp-appliance"
install -m 0644 "$source/README.md" "$source"/docs/*.md "$dest/usr/share/doc/smtp-appliance/"
