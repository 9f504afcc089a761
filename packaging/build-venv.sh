#!/bin/sh
# The appliance's private Python environment, for both packages: a virtualenv
# made in ROOT/PREFIX (a package build tree) that works once installed at PREFIX.
#
#   packaging/build-venv.sh ROOT PREFIX SOURCE    (SOURCE: the project's tree)
#
# Dependencies come from PyPI as wheels (packaging/README.md says why not from
# Debian). PYTHON (default /usr/bin/python3.11) is the interpreter the installed
# environment runs on: the packages depend on it. Nothing is byte-compiled here:
# the packages' scripts compile at install time, for the installed paths.
set -eu

root=$1 prefix=$2 source=$3
python=${PYTHON:-/usr/bin/python3.11}
target=$root$prefix

rm -rf "$target"
"$python" -m venv "$target"
pip="$target/bin/python -m pip --disable-pip-version-check --no-input"
$pip install --quiet --no-compile "$source"
# Third-party plugins installed later (smtp-appliance-pip) keep these versions.
$pip freeze --exclude smtp-appliance >"$target/constraints.txt"
# The environment knows the directory it was made in; it will live at PREFIX.
grep -rlI --null -F "$target" "$target" | xargs -0 -r sed -i "s|$target|$prefix|g"
# Where pip found each distribution (a path of this build machine) is not needed.
find "$target" -name direct_url.json -path '*.dist-info/*' -delete
find "$target" -name __pycache__ -type d -prune -exec rm -rf {} +
