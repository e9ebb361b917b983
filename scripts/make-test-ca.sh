#!/bin/sh
# make-test-ca.sh DIR: a throwaway PKI for the TLS tests (unit tests in src/tls.rs and
# tests/tls.rs), made with the openssl CLI in a few hundred milliseconds. EC P-256 keys,
# valid for two days, nothing secret.
#
#   ca.pem/.key               the test CA
#   server.pem/.key           CN=supd-test-server-1, serial 0x1001, for localhost, 127.0.0.1, ::1
#   server2.pem/.key          CN=supd-test-server-2, serial 0x1002, same names (the reload test);
#                             its key is in SEC1 form ("EC PRIVATE KEY"), the others PKCS#8
#   client.pem/.key           a client certificate from ca (CN=supd-test-client)
#   other-ca.pem/.key         another CA
#   other-client.pem/.key     a client certificate from other-ca
#   other-server.pem/.key     a server certificate from other-ca
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"

key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
}

ca() { # name CN
    key "$1"
    openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 2 -out "$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() { # name ca CN serial usage(serverAuth|clientAuth)
    [ -f "$1.key" ] || key "$1"
    openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$5"
        if [ "$5" = serverAuth ]; then
            echo "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
        else
            echo "subjectAltName=DNS:$3"
        fi
    } > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -set_serial "$4" -days 2 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "supd test CA"
ca other-ca "supd other test CA"
leaf server ca supd-test-server-1 0x1001 serverAuth
openssl ecparam -name prime256v1 -genkey -noout -out server2.key
leaf server2 ca supd-test-server-2 0x1002 serverAuth
leaf client ca supd-test-client 0x2001 clientAuth
leaf other-client other-ca supd-other-client 0x3001 clientAuth
leaf other-server other-ca supd-test-server-1 0x3002 serverAuth
chmod 0600 ./*.key
