/*
 * xdpprog: the XDP program in front of the AF_XDP sockets, and who holds it.
 *
 * The program is a few BPF instructions built here and loaded with the bpf() syscall (no clang,
 * libbpf or libxdp at build or run time, and no bpffs: nothing is pinned):
 *
 *     if (passAbove > 0 && ctx->data_end - ctx->data > passAbove) return XDP_PASS;
 *     return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
 *
 * Every frame of a receive queue with a socket in `xsks` goes to that socket; a frame of a queue
 * without one (no worker bound there, or the socket already closed) is passed to the kernel stack,
 * and so is a frame longer than `passAbove` (a GSO super-frame a generic-mode program sees whole:
 * the kernel keeps its offload metadata, which an XDP socket would lose; afxdp.h).
 *
 * It is attached with a BPF link (BPF_LINK_CREATE, kernel >= 5.9), in native (driver) mode when
 * the driver has it, else in generic (skb) mode; or in generic mode by choice (`generic`: on a veth
 * it keeps the peer's TSO, so GSO super-frames arrive whole, see afxdp.h). A link never replaces a program someone else
 * attached (that is EBUSY, reported as such), and it detaches when its last fd closes, so a
 * process that dies leaves nothing attached.
 *
 * One attachment per interface (network namespace + ifindex), shared by every socket bound to it
 * in this process whatever thread opened them: acquire() attaches on first use and counts,
 * release() detaches with the last socket.
 */
#pragma once

#include <cstdint>
#include <string>

namespace sfc {

struct XdpAttachment {
  uint64_t netns = 0;
  int ifindex = 0;
  int mapFd = -1;
  int progFd = -1;
  int linkFd = -1;
  bool native = false;  // driver mode (else generic)
  uint32_t progId = 0;
  int refs = 0;
};

/**
 * The attachment for `ifindex` in the calling thread's network namespace (attached now if it was
 * not: generic mode when `generic`, else native with a generic fallback; frames longer than
 * `passAbove` passed to the kernel, 0: none), with one more reference;
 * null with *err (an errno) and *what (the step) on failure.
 */
XdpAttachment* xdpAcquire(int ifindex, bool generic, uint32_t passAbove, int* err, std::string* what);

/** Put socket `xskFd` in the attachment's map at `queue`; 0 or an errno. */
int xdpAddSocket(XdpAttachment* a, uint32_t queue, int xskFd);

/** Drop one reference; the last detaches the program and closes the map. */
void xdpRelease(XdpAttachment* a);

}  // namespace sfc
