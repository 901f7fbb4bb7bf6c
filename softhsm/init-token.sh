#!/usr/bin/env bash
# Create a SoftHSM2 token for hsmbridge by hand (what `hsmbridge init --softhsm DIR` does for you).
# usage: softhsm/init-token.sh DIR [LABEL]   — prints the export lines to use it.
set -euo pipefail
dir=${1:?usage: $0 DIR [LABEL]}
label=${2:-hsmbridge}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/tokens" && chmod 700 "$dir/tokens"
sed "s#{tokendir}#$dir/tokens#" "$here/softhsm2.conf.template" > "$dir/softhsm2.conf"
pin=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' )
umask 077; printf '%s' "$pin" > "$dir/pin"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
  --pin "$pin" --so-pin "$(head -c 12 /dev/urandom | base64 | tr -d '/+=')" >/dev/null
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
echo "export HSMBRIDGE_HSM__PIN_FILE=$dir/pin"
