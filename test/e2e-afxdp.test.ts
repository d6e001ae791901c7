/*
 * End to end on the afxdp backend: real namespaces, real TCP/UDP, the compiled dataplane
 * (test/support/e2e.ts has the suite; this backend runs all of it), with frames copied between
 * the UMEM and the batch (the default) and kept in the UMEM (--frames-in-place).
 */
import { e2eSuite } from './support/e2e.js';

e2eSuite('afxdp');
e2eSuite('afxdp', { framesInPlace: true });
