/*
 * End to end on the ovs driver: real namespaces, real TCP/UDP, `sfc serve --driver ovs` rendering
 * the chains into a private Open vSwitch (ovsdb-server + ovs-vswitchd, netdev datapath) inside the
 * lab's dataplane namespace. test/support/e2e.ts has the suite; every test runs here except the
 * garbage test, which checks the userspace parser's per-reason drop counters (OVS's flow extractor
 * keeps no such reasons).
 */
import { e2eSuite } from './support/e2e.js';

e2eSuite({ driver: 'ovs' });
