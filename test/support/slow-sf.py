#!/usr/bin/python3
"""A slow routing SF, for the SF latency test (this kernel has no netem).

Run inside an SF namespace of the lab whose kernel forwarding is switched off: it does the
forwarding itself, in userspace, holding every frame DELAY_MS (from its arrival: the kernel's
receive timestamp) before sending it on. A frame
addressed to in0's MAC leaves by out0 to SERVER_MAC, one addressed to out0's MAC leaves by in0 to
CLIENT_MAC (the lab's neighbour entries), with the other port's MAC as source and the TTL / hop
limit decremented, as the kernel would. Prints "ready" once its sockets are bound.

  slow-sf.py DELAY_MS CLIENT_MAC SERVER_MAC
"""
import collections
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 3
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35


def mac_of(ifname):
    with open(f"/sys/class/net/{ifname}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def ipv4_checksum(header):
    s = sum((header[i] << 8) | header[i + 1] for i in range(0, len(header), 2))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def route(frame, src_mac, dst_mac):
    """The frame as the kernel would forward it, or None (not IP, TTL expired)."""
    f = bytearray(frame)
    ethertype = (f[12] << 8) | f[13]
    if ethertype == 0x0800:
        if f[22] <= 1:
            return None
        f[22] -= 1
        ihl = (f[14] & 0x0F) * 4
        f[24:26] = b"\0\0"
        c = ipv4_checksum(f[14 : 14 + ihl])
        f[24:26] = bytes([c >> 8, c & 0xFF])
    elif ethertype == 0x86DD:
        if f[21] <= 1:
            return None
        f[21] -= 1
    else:
        return None
    f[0:6] = dst_mac
    f[6:12] = src_mac
    return bytes(f)


def main():
    delay = float(sys.argv[1]) / 1000.0
    client_mac = bytes.fromhex(sys.argv[2].replace(":", ""))
    server_mac = bytes.fromhex(sys.argv[3].replace(":", ""))
    socks = {}
    for name in ("in0", "out0"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setblocking(False)
        socks[name] = s
    macs = {name: mac_of(name) for name in socks}
    # where a frame received on each port goes: the other port, to the endpoint behind it
    onward = {"in0": ("out0", server_mac), "out0": ("in0", client_mac)}
    by_fd = {s.fileno(): name for name, s in socks.items()}
    held = collections.deque()  # (due, out port, frame), due ascending (one constant delay)
    print("ready", flush=True)
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        readable, _, _ = select.select(list(socks.values()), [], [], timeout)
        for s in readable:
            name = by_fd[s.fileno()]
            while True:
                try:
                    frame, anc, _, addr = s.recvmsg(65535, 64)
                except BlockingIOError:
                    break
                # due DELAY after the kernel received it (realtime stamp -> this monotonic clock)
                due = time.monotonic() + delay
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", data[:16])
                        due -= time.time() - (sec + nsec / 1e9)
                if addr[2] == PACKET_OUTGOING or frame[0:6] != macs[name]:
                    continue
                out, dst = onward[name]
                routed = route(frame, macs[out], dst)
                if routed is not None:
                    held.append((due, out, routed))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, out, frame = held.popleft()
            socks[out].send(frame)


if __name__ == "__main__":
    main()
