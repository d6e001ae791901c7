/*
 * AF_XDP port: one XDP socket (XSK) with its own UMEM, bound to one receive queue of one
 * interface, fed by the XDP program of xdpprog.h.
 *
 * Opening (XskSocket::open, any thread): mmap a UMEM of `frames` 2 KiB chunks, register it, size
 * and map the four rings, put half the chunks on the fill ring (the other half is the transmit
 * pool), bind to (ifindex, queue) — zero-copy when the driver has it, else copy mode (veth) —,
 * attach the interface's XDP program (shared, counted) and put the socket in its map. The result
 * is parked in a process-wide table by fd, so the main thread can open every worker's socket and
 * each worker attach (take) its own; discard() frees one nobody took.
 *
 * Receive: up to `max` descriptors per call are copied from the UMEM into batch slots and their
 * chunks go straight back to the fill ring (one producer update per burst). The batch arena is
 * the engine's own JavaScript memory, so every frame is copied once in and once out; a frame
 * never stays in the UMEM between receive and transmit.
 *
 * Checksums: on the XDP path a frame has no skb metadata, so a TCP/UDP segment sent by a local
 * stack through a veth with checksum offload (CHECKSUM_PARTIAL) arrives with only the pseudo-header
 * sum in its checksum field. rx recognises exactly that value and completes the checksum
 * (offload.h); a complete checksum that happens to equal it is left unchanged by the completion,
 * so valid frames are never altered. There are no GSO frames: while an XDP program is attached to
 * a veth, the kernel turns off software GSO on its peer, so the peer's stack segments.
 *
 * Transmit: each frame is copied into a free chunk and described on the TX ring; one kick
 * (sendto) per burst when the kernel asks for it (need_wakeup) or always (need_wakeup off). Copy
 * mode sends at most a budget of frames per kick, so the kick repeats while the ring drains.
 * Chunks come back through the completion ring, reaped before each burst; with no free chunk
 * the rest of the burst is counted tx_busy and dropped.
 */
#pragma once

#include <linux/if_xdp.h>

#include <cstdint>
#include <string>

#include "port.h"
#include "xdpprog.h"

namespace sfc {

struct XskConfig {
  uint32_t queue = 0;
  uint32_t frames = 4096;  // UMEM chunks (2 KiB each); rings hold frames / 2
  bool needWakeup = false;
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
  uint8_t* umem = nullptr;
  size_t umemLen = 0;
  uint32_t frames = 0;
  XskRing rx, tx, fill, comp;
  XdpAttachment* xdp = nullptr;
  // Transmit pool: free chunk addresses (a stack).
  uint64_t* free = nullptr;
  uint32_t freeCount = 0;

  /** Open and bind; returns the socket (parked by fd) or null with *err and *what. */
  static XskSocket* open(const char* ifname, const XskConfig& cfg, int* err, std::string* what);
  /** Take the parked socket of `fd` (null when none). */
  static XskSocket* take(int fd);
  /** Free the parked socket of `fd`; false when there is none. */
  static bool discard(int fd);
  /** Unmap, close and release the XDP attachment. */
  void destroy();
};

/** Receive queues of an interface in this thread's namespace (ETHTOOL_GCHANNELS rx + combined; 1 when the driver does not say), -errno on error. */
int receiveQueues(const char* ifname);

class XskPort : public Port {
 public:
  XskPort(napi_env env, XskSocket* xsk, const char* ifname, uint32_t maxFrame, uint32_t maxBurst);
  uint32_t rx(const RxArgs& a) override;
  uint32_t tx(const TxArgs& a) override;

 protected:
  void unmap() override;
  void pollKernelStats() override;

 private:
  void reapCompletions();
  void kick();
  XskSocket* xsk_;
  xdp_statistics last_{};
};

}  // namespace sfc
