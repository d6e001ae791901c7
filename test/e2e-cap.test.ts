/*
 * End to end on the cap backend: real namespaces, real TCP/UDP, the compiled dataplane
 * (test/support/e2e.ts has the suite, the same on every backend).
 */
import { e2eSuite } from './support/e2e.js';

e2eSuite('cap');
