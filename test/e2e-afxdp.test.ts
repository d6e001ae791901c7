/*
 * End to end on the afxdp backend: real namespaces, real TCP/UDP, the compiled dataplane
 * (test/support/e2e.ts has the suite; this backend runs all of it).
 */
import { e2eSuite } from './support/e2e.js';

e2eSuite('afxdp');
