// The trace filter's dissector and expressions: through VLAN, MPLS and NSH to the packet inside.
import { describe, expect, it } from 'vitest';
import { buildFrame, type FrameSpec } from '../src/dataplane/frames.js';
import { compileMatch, dissect } from '../src/dataplane/tracefilter.js';

const udp = (extra: Partial<FrameSpec> = {}) =>
  buildFrame({ ip: { ver: 4, src: '10.0.0.1', dst: '10.0.0.2' }, l4: { proto: 'udp', sport: 1234, dport: 53 }, payload: 40, ...extra });

describe('trace filter', () => {
  it('reads the packet inside VLAN tags, an MPLS stack, NSH (bare IP or Ethernet inside)', () => {
    for (const extra of [{}, { vlans: [10, 20] }, { mpls: [0x1ff, 0x2fe] }, { nsh: { spi: 7, si: 254 } }, { nsh: { spi: 7, si: 254, ethernet: true } }]) {
      const d = dissect(udp(extra));
      expect(d, JSON.stringify(extra)).toMatchObject({ ver: 4, proto: 17, src: '10.0.0.1', dst: '10.0.0.2', sport: 1234, dport: 53 });
      expect(d!.key).toBe(dissect(udp())!.key); // the same packet, however encapsulated
    }
    const v6 = dissect(buildFrame({ ip: { ver: 6, src: 'fd00::1', dst: 'fd00::2' }, l4: { proto: 'tcp', sport: 5, dport: 80 } }));
    expect(v6).toMatchObject({ ver: 6, proto: 6, src: 'fd00:0:0:0:0:0:0:1', sport: 5, dport: 80 });
    expect(dissect(new Uint8Array(10))).toBeNull();
  });

  it('tells apart packets of one flow by their payload', () => {
    const a = udp({ payload: Uint8Array.from({ length: 40 }, (_, i) => i) });
    const b = udp({ payload: Uint8Array.from({ length: 40 }, (_, i) => (i === 20 ? 99 : i)) });
    expect(dissect(a)!.key).not.toBe(dissect(b)!.key);
  });

  it('matches tcpdump-like expressions', () => {
    const d = dissect(udp())!;
    const yes = ['', 'udp', 'ip', 'udp dst port 53', 'udp and dst port 53', 'src port 1234', 'port 53', 'host 10.0.0.2', 'src host 10.0.0.1', 'not tcp', 'udp and not icmp'];
    const no = ['tcp', 'ip6', 'src port 53', 'dst host 10.0.0.1', 'not udp', 'udp and port 80', 'host fd00::1'];
    for (const e of yes) expect(compileMatch(e)(d), e).toBe(true);
    for (const e of no) expect(compileMatch(e)(d), e).toBe(false);
    expect(compileMatch('host fd00::2')(dissect(buildFrame({ ip: { ver: 6, src: 'fd00::1', dst: 'fd00::2' }, l4: { proto: 'udp' } }))!)).toBe(true);
  });

  it('names what it cannot read', () => {
    expect(() => compileMatch('udp port')).toThrow(/'' is not a port/);
    expect(() => compileMatch('host 10.0.0')).toThrow(/'10.0.0' is not an IP address/);
    expect(() => compileMatch('gre')).toThrow(/unknown word 'gre'/);
    expect(() => compileMatch('not')).toThrow(/ends too early/);
  });
});
