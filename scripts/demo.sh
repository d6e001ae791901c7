#!/usr/bin/env bash
# The lab demo: installs what is missing, builds, then runs `sfc demo` (a two-hop chain in network
# namespaces with real TCP and UDP between a client and a server). Ctrl-C tears the lab down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/src/cli.js demo "$@"
