#!/usr/bin/env bash
# All the tests: installs what is missing, builds, then runs the whole vitest suite (unit, property,
# golden-pcap, API contract, real openstack client, network-namespace end-to-end and OVS tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm test
