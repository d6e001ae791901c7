/*
 * AF_PACKET port: one packet socket bound to one interface.
 *
 * Receive: a packet ring walked frame by frame and copied into batch slots through offload.h, so a
 * burst is one call and no syscall while frames wait. PACKET_VNET_HDR describes partial checksums
 * and GSO super-frames (repaired while copying); PACKET_IGNORE_OUTGOING keeps our own (and every
 * other local) transmissions out of the ring, and PACKET_OUTGOING frames are skipped anyway.
 * Two ring layouts:
 *   - TPACKET_V2 (default): fixed 2 KiB frames, each handed over (and signalled) as it arrives, so
 *     a lone frame waits for nothing and an idle socket costs nothing. A frame too big for its
 *     ring frame (a 64 KiB GSO frame) is also queued whole on the socket (PACKET_COPY_THRESH,
 *     TP_STATUS_COPY) and read with recvmsg() when the walk reaches it.
 *   - TPACKET_V3: blocks of packed variable-size frames, handed over when full or when the retire
 *     timer fires. Fewer cache lines per frame under load, but a frame may wait up to the retire
 *     timeout, and each socket's timer fires every timeout even when idle (measured: 20 idle
 *     sockets at 1 ms = ~19k timer interrupts/s), so it is opt-in.
 *
 * Transmit: sendmmsg() of the whole burst in one syscall (each message = a zero virtio_net_hdr +
 * the frame, in place in the arena), with PACKET_QDISC_BYPASS. sendmmsg rather than a TX ring:
 * a TX ring hands its pages to the skb, and a veth peer that queues the skb (a TCP receive queue)
 * would see the slot rewritten after the kernel released it early (ip_rcv orphans the skb).
 *
 * Several workers: each opens its own socket and joins one PACKET_FANOUT group per interface in
 * hash mode. The kernel's fanout hash is symmetric, and it indexes the group's members in join
 * order, so the runtime opens all of an interface's sockets in worker order from one thread
 * (openSocket) and hands the fds to the workers, which attach() them. Then both directions of a
 * flow, arriving on different interfaces, meet the same worker.
 */
#pragma once

#include <linux/if_packet.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <string>

#include "offload.h"
#include "port.h"

namespace sfc {

struct RingConfig {
  uint32_t version = 2;           // 2 = TPACKET_V2, 3 = TPACKET_V3 (addon.cc picks V3 defaults)
  uint32_t blockSize = 1u << 20;  // V3: must hold the largest GSO frame (64 KiB + headers)
  uint32_t blockCount = 4;        // V2: 4 MiB = 2048 frames of 2 KiB
  uint32_t retireMs = 2;          // V3 only
};

struct SocketConfig {
  RingConfig ring;
  int fanoutGroup = -1;  // -1: no fanout
  bool fanoutDefrag = false;
  int sndbuf = 4 << 20;
  int rcvbuf = 4 << 20;  // V2: room for whole oversize (GSO) frames queued beside the ring
};

class AfPacketPort : public Port {
 public:
  /** Create, configure, bind and (optionally) join a fanout group; returns the fd or -errno. */
  static int openSocket(const char* ifname, const SocketConfig& cfg, std::string* what);
  AfPacketPort(napi_env env, int fd, bool ownsFd, const char* ifname, int ifindex, uint32_t maxFrame, uint32_t maxBurst);
  /** Map the ring (size from cfg); returns 0 or errno. */
  int map(const RingConfig& cfg);
  uint32_t rx(const RxArgs& a) override;
  uint32_t tx(const TxArgs& a) override;
  void pollKernelStats() override;

 protected:
  void unmap() override;

 private:
  struct Burst;
  uint32_t rxV2(Burst& b);
  uint32_t rxV3(Burst& b);
  bool take(Burst& b, const uint8_t* mac, uint32_t len, uint32_t status, uint16_t tci, uint16_t tpid, double t);
  bool takeCopied(Burst& b, uint32_t status, uint16_t tci, uint16_t tpid, double t);

  uint8_t* ring_ = nullptr;
  size_t ringSize_ = 0;
  uint32_t version_ = 2;
  uint32_t blockSize_ = 0;
  uint32_t blockCount_ = 0;
  uint32_t frameSize_ = 0;
  uint32_t frameCount_ = 0;
  uint32_t block_ = 0;     // V3: block being read
  uint32_t frameIdx_ = 0;  // V3: frames of it already consumed; V2: ring frame being read
  uint8_t* frame_ = nullptr;
  // V2 oversize frames: read whole with recvmsg; kept here when the burst had no room for them.
  static constexpr size_t kCopyMax = 65536 + 1024;
  uint8_t copyBuf_[sizeof(VirtioNetHdr) + kCopyMax];
  uint32_t copyLen_ = 0;  // bytes of a pending copied frame (after its virtio header), 0 = none
  static constexpr uint32_t kTxChunk = 256;
  mmsghdr msgs_[kTxChunk];
  iovec iov_[2 * kTxChunk];
};

}  // namespace sfc
