#!/usr/bin/env bash
# Installs what a fresh Debian machine (Node 20, root) lacks, then the npm dependencies, the native
# addon and the TypeScript build. Idempotent: quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: iproute2/nftables/ethtool for the lab, libpcap for the cap backend, tcpdump to
# read captures, netsniff-ng (trafgen) and openvswitch-switch for the benchmarks and the OVS peer,
# the OpenStack client with networking-sfc's client extensions for the API compatibility test,
# tshark (Wireshark's dissectors) to check MPLS/NSH encapsulations independently, tmux (a real
# terminal for `sfc top`), prometheus (a real scraper of /metrics) and etcd (the shared model of
# `sfc serve --store etcd://`, run as a 3-member cluster by the tests and `sfc lab up --hosts 3`).
PKGS=(iproute2 iputils-ping nftables ethtool tcpdump libpcap-dev netsniff-ng openvswitch-switch iperf3 procps
      python3-openstackclient python3-neutronclient python3-networking-sfc tshark tmux prometheus
      etcd-server etcd-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm dependencies (runs node-gyp for our addon and for cap), then the TypeScript build.
# `npm ci` first. This machine's registry mirror serves only linux-x64 builds of packages that
# ship per-platform optional binaries (rollup's), so npm leaves the other platforms out of the lock
# file and `npm ci` then refuses it as out of sync; `npm install` installs the same locked versions.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if ! npm ci --no-fund --no-audit; then
    echo "setup: npm ci refused the lock file (see above); installing the locked versions with npm install"
    npm install --no-fund --no-audit
  fi
fi
[ -f build/Release/sfc_io.node ] || npm run build:native
npm run build --silent
