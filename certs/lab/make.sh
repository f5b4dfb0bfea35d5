#!/bin/sh
# (Re)issue the lab mail server certificate under the lab CA (TEST ONLY, see README.md).
# Usage: certs/lab/make.sh [--new-ca]   (writes mail.pem mail.key next to this script; the
# CA, ca.pem ca.key, is made only when missing or with --new-ca, so re-issuing the mail
# certificate does not invalidate anything else signed by the CA)
set -eu
cd "$(dirname "$0")"
new_ca=0
case "${1:-}" in
--new-ca) new_ca=1 ;;
"") ;;
*) echo "usage: $0 [--new-ca]" >&2; exit 2 ;;
esac
[ -f ca.pem ] && [ -f ca.key ] || new_ca=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexus-labcert.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# CA: EC P-256, 100 years, CA:TRUE, may only sign certificates.
[ $new_ca = 0 ] || openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days 36500 -sha256 \
    -subj "/O=plexus lab/CN=plexus lab CA (test only)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"

# Mail server: names the lab mail host by DNS name and by both addresses.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout mail.key -out "$tmp/mail.csr" -subj "/O=plexus lab/CN=mail.lab.example"
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:mail.lab.example,IP:203.0.113.25,IP:2001:db8:0:25::25
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
openssl x509 -req -in "$tmp/mail.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -CAserial "$tmp/ca.srl" -out mail.pem -days 36500 -sha256 -extfile "$tmp/ext.cnf"
chmod 600 ca.key mail.key
openssl verify -CAfile ca.pem mail.pem
