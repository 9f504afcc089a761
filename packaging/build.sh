#!/usr/bin/env bash
# `make package`: the .deb (dpkg-buildpackage), and the .rpm when rpmbuild is
# installed, from the files git knows in this checkout (committed or not).
#
#   packaging/build.sh OUTDIR      (writes OUTDIR/*.deb, OUTDIR/*.rpm)
set -euo pipefail

out=$(mkdir -p "$1" && cd "$1" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/pyproject.toml" | head -n 1)
deb_version=$(sed -n '1s/^smtp-appliance (\([^)]*\)).*/\1/p' "$top/packaging/debian/changelog")
if [ "$version" != "$deb_version" ]; then
    echo "build.sh: pyproject.toml has version $version, packaging/debian/changelog" \
         "$deb_version: add a changelog entry" >&2
    exit 1
fi

work="$out/work"
tree="$work/smtp-appliance-$version"
rm -rf "$work" "$out"/*.deb "$out"/*.rpm
mkdir -p "$tree"
# (A file deleted but not yet committed is skipped.)
(cd "$top" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -cf - -T - 2>/dev/null) | tar -xf - -C "$tree"
cp -r "$top/packaging/debian" "$tree/debian"

start=$SECONDS
(cd "$tree" && dpkg-buildpackage -b -us -uc >"$out/dpkg-buildpackage.log" 2>&1) || {
    tail -n 40 "$out/dpkg-buildpackage.log" >&2
    exit 1
}
mv "$work"/*.deb "$out/"
echo "package: $(cd "$out" && ls ./*.deb) in $((SECONDS - start))s"

if command -v rpmbuild >/dev/null; then
    start=$SECONDS
    # --nodeps: the build host is Debian, whose rpm database is empty.
    rpmbuild -bb --nodeps --define "_topdir $work/rpm" --define "srcdir $tree" \
        --define "version $version" "$top/packaging/rpm/smtp-appliance.spec" \
        >"$out/rpmbuild.log" 2>&1 || { tail -n 40 "$out/rpmbuild.log" >&2; exit 1; }
    mv "$work"/rpm/RPMS/*/*.rpm "$out/"
    echo "package: $(cd "$out" && ls ./*.rpm) in $((SECONDS - start))s"
fi
