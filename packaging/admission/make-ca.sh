#!/usr/bin/env bash
# Serving certificate for dadi-p2p-admission on clusters without cert-manager.
#
# Makes a private CA and a serving certificate for the webhook's Service, stores them in the
# dadi-p2p-admission-tls Secret (the Deployment mounts it; the webhook reloads it when it
# changes) and writes the CA into the MutatingWebhookConfiguration's caBundle.
# Run it after applying the manifests, and again before the certificate expires (--days).
#
#   packaging/admission/make-ca.sh [--namespace NS] [--service NAME] [--webhook NAME]
#                                  [--days N] [--out DIR]
#
# The CA key stays in --out (default: a new temporary directory, printed at the end); keep it
# to reissue without changing caBundle, or let each run make a new CA. KUBECTL names the
# kubectl binary (default: kubectl).
set -euo pipefail

namespace=dadi-p2p-system
service=dadi-p2p-admission
webhook=dadi-p2p-admission
secret=dadi-p2p-admission-tls
days=365
out=""
kubectl=${KUBECTL:-kubectl}

die() { echo "make-ca.sh: $*" >&2; exit 2; }

while (($#)); do
  case $1 in
    --namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
    --service) service=${2:?--service needs a value}; shift 2 ;;
    --webhook) webhook=${2:?--webhook needs a value}; shift 2 ;;
    --days) days=${2:?--days needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive whole number, not '$days'"
command -v openssl >/dev/null || die "openssl is needed"
command -v "$kubectl" >/dev/null || die "kubectl is needed (or set KUBECTL)"

if [[ -z $out ]]; then
  out=$(mktemp -d)
fi
mkdir -p "$out"
umask 077

dns="$service.$namespace.svc"
if [[ ! -s $out/ca.key || ! -s $out/ca.crt ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/ca.key" -out "$out/ca.crt" -days 3650 \
    -subj "/CN=dadi-p2p-admission-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$out/tls.key" -out "$out/tls.csr" -subj "/CN=$dns" 2>/dev/null
cat >"$out/tls.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$dns,DNS:$dns.cluster.local
EXT
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
  -CAcreateserial -days "$days" -extfile "$out/tls.ext" -out "$out/tls.crt" 2>/dev/null
openssl verify -CAfile "$out/ca.crt" "$out/tls.crt" >/dev/null

# Written as one apply, so the webhook sees the new pair at once.
"$kubectl" -n "$namespace" create secret tls "$secret" \
  --cert="$out/tls.crt" --key="$out/tls.key" --dry-run=client -o yaml |
  "$kubectl" apply -f -

ca_bundle=$(base64 <"$out/ca.crt" | tr -d '\n')
"$kubectl" patch mutatingwebhookconfiguration "$webhook" --type=json \
  -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}]"

echo "make-ca.sh: $secret in $namespace for $dns, valid $days days; CA kept in $out"
