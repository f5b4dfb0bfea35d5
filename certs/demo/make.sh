#!/bin/sh
# Regenerates the demo identities in this directory. FOR TESTING ONLY: the private keys
# are committed to a public repository and protect nothing.
#
#   ca        demo CA (EC P-256) that issued alice, bob and carol
#   alice     alice@lab.example/home    RSA 2048, issued by the demo CA
#   bob       bob@lab.example/office    EC P-256, issued by the demo CA
#   carol     carol@lab.example/nas     RSA 2048, issued by the demo CA
#   mallory   mallory@lab.example/evil  RSA 2048, self-signed (negative tests)
#
# Usage: sh make.sh   (run inside certs/demo; overwrites the files listed above)
set -eu
cd "$(dirname "$0")"
DAYS=9125   # 25 years: the tests must not start failing because a demo cert expired

umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexus-demo-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
openssl req -new -x509 -key ca.key -out ca.pem -days "$DAYS" -sha256 \
    -subj "/O=plexus demo/CN=plexus demo CA (testing only)" \
    -set_serial 0x1000 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"

# issue NAME ID KEYTYPE SERIAL
issue() {
    name=$1 id=$2 kind=$3 serial=$4
    mail=${id%%/*}
    subj="/CN=$(printf '%s' "$id" | sed 's,/,\\/,g')"  # '/' must be escaped in -subj
    if [ "$kind" = ec ]; then
        openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key"
        ku="critical,digitalSignature,keyAgreement"
    else
        openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key"
        ku="critical,digitalSignature,keyEncipherment"
    fi
    cat > "$tmp/$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=$ku
extendedKeyUsage=emailProtection
subjectAltName=email:$mail
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl req -new -key "$name.key" -subj "$subj" -out "$tmp/$name.csr"
    openssl x509 -req -in "$tmp/$name.csr" -CA ca.pem -CAkey ca.key -set_serial "$serial" \
        -days "$DAYS" -sha256 -extfile "$tmp/$name.ext" -out "$name.pem"
}

issue alice alice@lab.example/home rsa 0x1001
issue bob bob@lab.example/office ec 0x1002
issue carol carol@lab.example/nas rsa 0x1003

# mallory: self-signed, same shape as the others, trusted by nobody.
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out mallory.key
openssl req -new -x509 -key mallory.key -out mallory.pem -days "$DAYS" -sha256 \
    -subj "/CN=mallory@lab.example\\/evil" -set_serial 0x1004 \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=emailProtection" \
    -addext "subjectAltName=email:mallory@lab.example"

for n in ca alice bob carol mallory; do
    printf '%-8s %s\n' "$n" "$(openssl x509 -in "$n.pem" -noout -fingerprint -sha256)"
done
