/*
 * AF_XDP port: one XDP socket (XSK) bound to one receive queue of one interface, its UMEM an arena
 * (xskarena.h), fed by the XDP program of xdpprog.h.
 *
 * Opening (XskSocket::open, any thread): register the arena (a worker's, shared by all its sockets,
 * or a private one of `frames` chunks) as the socket's UMEM, or share the UMEM of a socket already
 * bound on it (XDP_SHARED_UMEM); size and map the four rings, bind to
 * (ifindex, queue) — zero-copy when the driver has it, else copy mode (veth) —, attach the
 * interface's XDP program (shared, counted) and put the socket in its map. The result is parked in
 * a process-wide table by fd, so the main thread can open every worker's socket and each worker
 * attach (take) its own; discard() frees one nobody took. The fill ring is filled on attach, on the
 * worker's thread, which alone hands out the arena's chunks.
 *
 * Receive: up to `max` descriptors per call. When the burst's batch arena is the socket's arena,
 * a frame stays where the kernel wrote it: its slot's start points into the chunk and the slot
 * holds the chunk until transmit or its next receive. Otherwise (a private arena) the frame is
 * copied into its slot and the chunk freed. The fill ring is topped up from the arena's pool.
 *
 * Checksums: on the XDP path a frame has no skb metadata, so a TCP/UDP segment sent by a local
 * stack through a veth with checksum offload (CHECKSUM_PARTIAL) arrives with only the pseudo-header
 * sum in its checksum field. rx recognises exactly that value and completes the checksum
 * (offload.h); a complete checksum that happens to equal it is left unchanged by the completion,
 * so valid frames are never altered.
 *
 * GSO super-frames (XskConfig::gso): while a native XDP program is attached to a veth, the kernel
 * turns TSO off on its peer, whose stack then cuts TCP into 1,500-byte frames before they cross
 * the link, one XDP run and one copy each. A generic-mode program leaves the peer's TSO alone, so
 * a 64 KiB super-frame crosses whole; an XDP socket would get its bytes without the kernel's
 * offload metadata (segment size, checksum state), which a UDP GSO datagram cannot be cut without.
 * So the program passes every frame longer than the MTU allows (or a chunk holds) to the kernel
 * (xdpprog.h), and the port reads those from an AF_PACKET socket on the same interface (the
 * socket of queue 0, which sees every queue's), with a virtio-net header: they are cut and
 * completed exactly as the AF_PACKET backend does (afpacket.h, offload.h), TCP and UDP alike
 * (rx_gso_frames, rx_gso_segments; its kernel drops count as rx_kernel_drops). Either socket's
 * readiness wakes the port, and a burst reads the super-frames first (a ring of small frames
 * waits; a super-frame queued behind a busy ring would wait for a burst with room for all its
 * segments).
 * Only on a veth (elsewhere native XDP sees wire frames anyway, and is the faster mode) and with
 * private UMEMs (frames in place keep every frame in a chunk from receive to transmit; the
 * segments of a super-frame have none, so that mode attaches natively).
 *
 * Transmit: a frame still in the chunk its slot holds is described on the TX ring as it is (no
 * copy; counted tx_in_place) and the slot gives up the chunk, so a second interface sending the same
 * slot (a flood) copies it. Any other frame is copied into a free chunk. One kick (sendto) per
 * burst when the kernel asks for it (need_wakeup) or always (need_wakeup off); copy mode sends at
 * most a budget of frames per kick, so the kick repeats while the ring drains. Chunks come back
 * through the completion ring, reaped before each burst, receive or transmit; with no free chunk the
 * rest of the burst is counted tx_busy and dropped. A chunk sent in place is reused only after its
 * completion, so a frame read after its transmit in the same batch (a capture) is still whole.
 */
#pragma once

#include <linux/if_xdp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "afpacket.h"
#include "port.h"
#include "xdpprog.h"
#include "xskarena.h"

namespace sfc {

struct XskConfig {
  uint32_t queue = 0;
  uint32_t frames = 4096;  // rings hold frames / 2; a private arena has `frames` chunks
  bool needWakeup = false;
  int arena = 0;           // a worker's arena (xskarena.h), 0: a private one
  bool gso = false;        // receive GSO super-frames whole (generic XDP, an AF_PACKET socket); private arenas only
};


/** A producer or consumer view of one mmapped ring. */
struct XskRing {
  uint32_t* producer = nullptr;
  uint32_t* consumer = nullptr;
  uint32_t* flags = nullptr;
  void* desc = nullptr;
  uint32_t mask = 0;
  uint32_t size = 0;
  void* map = nullptr;
  size_t mapLen = 0;
};

/** An opened, bound XSK with its UMEM and rings (owned by XskPort once attached). */
struct XskSocket {
  int fd = -1;
  int ifindex = 0;
  uint32_t queue = 0;
  bool zeroCopy = false;
  bool needWakeup = false;
  bool sharesUmem = false;  // bound with XDP_SHARED_UMEM to another socket of its arena
  bool gso = false;         // behind a generic-mode program that passes super-frames (XskConfig::gso took)
  int passFd = -1;           // gso, queue 0: the AF_PACKET socket reading what the program passes
  XskArena* arena = nullptr;
  uint16_t tag = 0;          // the arena's name for this socket's chunks (0 until attached)
  uint32_t fillHeld = 0;     // chunks given to the fill ring and not yet received
  XskRing rx, tx, fill, comp;
  XdpAttachment* xdp = nullptr;

  /** Open and bind; returns the socket (parked by fd) or null with *err and *what. */
  static XskSocket* open(const char* ifname, const XskConfig& cfg, int* err, std::string* what);
  /** Take the parked socket of `fd` (null when none). */
  static XskSocket* take(int fd);
  /** Free the parked socket of `fd`; false when there is none. */
  static bool discard(int fd);
  /** Unmap, close, give the chunks it held back to the arena, release the XDP attachment. */
  void destroy();
};

/** Receive queues of an interface in this thread's namespace (ETHTOOL_GCHANNELS rx + combined; 1 when the driver does not say), -errno on error. */
int receiveQueues(const char* ifname);

class XskPort : public Port {
 public:
  XskPort(napi_env env, XskSocket* xsk, const char* ifname, uint32_t maxFrame, uint32_t maxBurst);
  uint32_t rx(const RxArgs& a) override;
  uint32_t tx(const TxArgs& a) override;
  void setCounters(double* counters, napi_ref keepAlive) override;
  void pollKernelStats() override;

 protected:
  void unmap() override;

 private:
  uint32_t rxRing(const RxArgs& a);
  void reapCompletions();
  void topUp();
  void kick();
  XskSocket* xsk_;
  xdp_statistics last_{};
  std::unique_ptr<AfPacketPort> passed_;  // reads xsk_->passFd (the super-frames), counting into ctr_
};

}  // namespace sfc
