#!/usr/bin/env bash
# Generate a self-signed certificate for local runs (`make serve`) if missing:
# CN=localhost, SAN DNS:localhost + IP:127.0.0.1, RSA 2048, valid 825 days. The
# packages run it at install with this machine's name (CN and SAN DNS:NAME).
#
#   scripts/make-cert.sh [DIR [NAME]]   (default: var/tls localhost; writes
#                                        DIR/cert.pem, DIR/key.pem)
set -euo pipefail

dir=${1:-var/tls}
name=${2:-localhost}
san="DNS:$name"
if [ "$name" = localhost ]; then
    san="$san,IP:127.0.0.1"
fi
cert=$dir/cert.pem
key=$dir/key.pem

if [ -s "$cert" ] && [ -s "$key" ]; then
    exit 0
fi

mkdir -p "$dir"
umask 077
openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 825 \
    -subj "/CN=$name" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$key.tmp" -out "$cert.tmp" 2>/dev/null
chmod 644 "$cert.tmp"
mv "$key.tmp" "$key"
mv "$cert.tmp" "$cert"
echo "make-cert: wrote $cert and $key"
