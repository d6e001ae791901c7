// AF_PACKET port: TPACKET_V3 receive ring, sendmmsg transmit, fanout (see afpacket.h).
#include "afpacket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>


#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

namespace sfc {
namespace {

constexpr uint32_t kFrameSize = 2048;  // V2 frame size; V3 ignores it for packing (it must divide the block)

int setInt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof(value));
}

const VirtioNetHdr kNoOffload = {};

}  // namespace

int AfPacketPort::openSocket(const char* ifname, const SocketConfig& cfg, std::string* what) {
  const unsigned ifindex = if_nametoindex(ifname);
  if (ifindex == 0) {
    *what = "if_nametoindex";
    return -ENODEV;
  }
  // Protocol 0 until bind(): the socket receives nothing from other interfaces meanwhile.
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *what = "socket";
    return -errno;
  }
  const char* step = nullptr;
  const bool v3 = cfg.ring.version == 3;
  tpacket_req3 req{};  // a tpacket_req (V2) is its first four fields
  req.tp_block_size = cfg.ring.blockSize;
  req.tp_block_nr = cfg.ring.blockCount;
  req.tp_frame_size = kFrameSize;
  req.tp_frame_nr = cfg.ring.blockSize / kFrameSize * cfg.ring.blockCount;
  req.tp_retire_blk_tov = cfg.ring.retireMs;
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = int(ifindex);
  packet_mreq mr{};
  mr.mr_ifindex = int(ifindex);
  mr.mr_type = PACKET_MR_PROMISC;

  if (setInt(fd, SOL_PACKET, PACKET_VERSION, v3 ? TPACKET_V3 : TPACKET_V2) < 0) {
    step = "PACKET_VERSION";
  } else if (setInt(fd, SOL_PACKET, PACKET_VNET_HDR, 1) < 0) {
    step = "PACKET_VNET_HDR";
  } else if (setInt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1) < 0) {
    step = "PACKET_QDISC_BYPASS";
  } else if (setInt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) < 0) {
    step = "PACKET_IGNORE_OUTGOING";
  } else if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, v3 ? sizeof(tpacket_req3) : sizeof(tpacket_req)) < 0) {
    step = "PACKET_RX_RING";
  } else if (!v3 && setInt(fd, SOL_PACKET, PACKET_COPY_THRESH, 1) < 0) {
    step = "PACKET_COPY_THRESH";
  } else if (!v3 && setInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, cfg.rcvbuf) < 0 &&
             setInt(fd, SOL_SOCKET, SO_RCVBUF, cfg.rcvbuf) < 0) {
    step = "SO_RCVBUF";
  } else if (setInt(fd, SOL_SOCKET, SO_SNDBUFFORCE, cfg.sndbuf) < 0 && setInt(fd, SOL_SOCKET, SO_SNDBUF, cfg.sndbuf) < 0) {
    step = "SO_SNDBUF";
  } else if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) < 0) {
    step = "bind";
  } else if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0) {
    step = "PACKET_ADD_MEMBERSHIP";
  } else if (cfg.fanoutGroup >= 0) {
    const int mode = PACKET_FANOUT_HASH | (cfg.fanoutDefrag ? PACKET_FANOUT_FLAG_DEFRAG : 0);
    if (setInt(fd, SOL_PACKET, PACKET_FANOUT, (cfg.fanoutGroup & 0xffff) | (mode << 16)) < 0) step = "PACKET_FANOUT";
  }
  if (step == nullptr) return fd;
  const int err = errno;
  ::close(fd);
  *what = step;
  return -err;
}

AfPacketPort::AfPacketPort(napi_env env, int fd, bool ownsFd, const char* ifname, int ifindex, uint32_t maxFrame,
                           uint32_t maxBurst)
    : Port(env, fd, ownsFd, ifname, ifindex, maxFrame, maxBurst) {
  memset(msgs_, 0, sizeof(msgs_));
}

int AfPacketPort::map(const RingConfig& cfg) {
  const size_t size = size_t(cfg.blockSize) * cfg.blockCount;
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, 0);
  if (p == MAP_FAILED) return errno;
  ring_ = static_cast<uint8_t*>(p);
  ringSize_ = size;
  version_ = cfg.version == 3 ? 3 : 2;
  blockSize_ = cfg.blockSize;
  blockCount_ = cfg.blockCount;
  frameSize_ = kFrameSize;
  frameCount_ = cfg.blockSize / kFrameSize * cfg.blockCount;
  return 0;
}

void AfPacketPort::unmap() {
  if (ring_ != nullptr) munmap(ring_, ringSize_);
  ring_ = nullptr;
}

void AfPacketPort::pollKernelStats() {
  tpacket_stats_v3 st{};
  socklen_t len = sizeof(st);
  if (fd_ >= 0 && getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) ctr_[IO_rx_kernel_drops] += st.tp_drops;
}

struct AfPacketPort::Burst {
  const RxArgs& a;
  uint32_t k;
  double bytes;
};

uint32_t AfPacketPort::rx(const RxArgs& a) {
  if (ring_ == nullptr) return 0;
  Burst b{a, 0, 0};
  const uint32_t k = version_ == 3 ? rxV3(b) : rxV2(b);
  ctr_[IO_rx_frames] += k;
  ctr_[IO_rx_bytes] += b.bytes;
  return k;
}

bool AfPacketPort::take(Burst& b, const uint8_t* mac, uint32_t len, uint32_t status, uint16_t tci, uint16_t tpid,
                        double t) {
  const RxArgs& a = b.a;
  VirtioNetHdr vh;
  memcpy(&vh, mac - sizeof(vh), sizeof(vh));
  const VnetInfo vnet{vh.flags, vh.gsoType, vh.gsoSize, vh.csumStart, vh.csumOffset};
  const VlanTag tag{(status & TP_STATUS_VLAN_VALID) != 0, (status & TP_STATUS_VLAN_TPID_VALID) ? tpid : uint16_t(0x8100),
                    tci};
  const SlotSink sink{a.arena, a.arenaLen, a.starts, a.lens, a.from + b.k, a.max - b.k, maxFrame_};
  uint32_t written;
  bool segmented, csumFixed;
  ExpandResult r = expandFrame(mac, len, tag, &vnet, sink, &written, &segmented, &csumFixed);
  if (r == ExpandResult::NoRoom) {
    // Leave it for a burst with more room, unless even a whole batch could not hold it.
    if (b.k > 0 || a.max < maxBurst_) return false;
    r = ExpandResult::TooBig;
  }
  if (r == ExpandResult::Ok) {
    for (uint32_t j = 0; j < written; j++) {
      b.bytes += a.lens[a.from + b.k + j];
      if (a.times != nullptr) a.times[a.from + b.k + j] = t;
    }
    b.k += written;
    if (segmented) {
      ctr_[IO_rx_gso_frames]++;
      ctr_[IO_rx_gso_segments] += written;
    } else if (csumFixed) {
      ctr_[IO_rx_csum_completed]++;
    }
  } else if (r == ExpandResult::TooBig) {
    ctr_[IO_rx_too_big]++;
  } else {
    ctr_[IO_rx_malformed]++;
  }
  return true;
}

bool AfPacketPort::takeCopied(Burst& b, uint32_t status, uint16_t tci, uint16_t tpid, double t) {
  if (copyLen_ == 0) {
    const ssize_t n = recv(fd_, copyBuf_, sizeof(copyBuf_), MSG_DONTWAIT | MSG_TRUNC);
    if (n < ssize_t(sizeof(VirtioNetHdr)) + 14) {
      ctr_[IO_rx_malformed]++;  // the ring said the whole frame was queued, but it is not there
      return true;
    }
    if (size_t(n) > sizeof(copyBuf_)) {
      ctr_[IO_rx_too_big]++;
      return true;
    }
    copyLen_ = uint32_t(n) - sizeof(VirtioNetHdr);
  }
  if (!take(b, copyBuf_ + sizeof(VirtioNetHdr), copyLen_, status, tci, tpid, t)) return false;
  copyLen_ = 0;
  return true;
}

uint32_t AfPacketPort::rxV2(Burst& b) {
  while (b.k < b.a.max) {
    uint8_t* f = ring_ + size_t(frameIdx_) * frameSize_;
    auto* h = reinterpret_cast<tpacket2_hdr*>(f);
    const uint32_t status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
    if ((status & TP_STATUS_USER) == 0) break;
    const auto* sll = reinterpret_cast<const sockaddr_ll*>(f + TPACKET_ALIGN(sizeof(tpacket2_hdr)));
    const double t = double(h->tp_sec) * 1e9 + double(h->tp_nsec);
    bool done = true;
    if (sll->sll_pkttype == PACKET_OUTGOING) {
      ctr_[IO_rx_own_skipped]++;
      if (status & TP_STATUS_COPY) recv(fd_, copyBuf_, sizeof(copyBuf_), MSG_DONTWAIT | MSG_TRUNC);
    } else if (status & TP_STATUS_COPY) {
      done = takeCopied(b, status, h->tp_vlan_tci, h->tp_vlan_tpid, t);
    } else if (h->tp_snaplen < h->tp_len) {
      ctr_[IO_rx_too_big]++;
    } else {
      done = take(b, f + h->tp_mac, h->tp_snaplen, status, h->tp_vlan_tci, h->tp_vlan_tpid, t);
    }
    if (!done) break;
    __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    frameIdx_ = frameIdx_ + 1 == frameCount_ ? 0 : frameIdx_ + 1;
  }
  return b.k;
}

uint32_t AfPacketPort::rxV3(Burst& b) {
  while (b.k < b.a.max) {
    auto* bd = reinterpret_cast<tpacket_block_desc*>(ring_ + size_t(block_) * blockSize_);
    if ((__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) == 0) break;
    const uint32_t count = bd->hdr.bh1.num_pkts;
    if (frameIdx_ == 0) frame_ = reinterpret_cast<uint8_t*>(bd) + bd->hdr.bh1.offset_to_first_pkt;
    bool full = false;
    while (frameIdx_ < count && b.k < b.a.max) {
      const auto* h = reinterpret_cast<const tpacket3_hdr*>(frame_);
      const auto* sll = reinterpret_cast<const sockaddr_ll*>(frame_ + TPACKET_ALIGN(sizeof(tpacket3_hdr)));
      if (sll->sll_pkttype == PACKET_OUTGOING) {
        ctr_[IO_rx_own_skipped]++;
      } else if (h->tp_snaplen < h->tp_len) {
        ctr_[IO_rx_too_big]++;
      } else if (!take(b, frame_ + h->tp_mac, h->tp_snaplen, h->tp_status, uint16_t(h->hv1.tp_vlan_tci),
                       uint16_t(h->hv1.tp_vlan_tpid), double(h->tp_sec) * 1e9 + double(h->tp_nsec))) {
        full = true;
        break;
      }
      frame_ += h->tp_next_offset;
      frameIdx_++;
    }
    if (full || frameIdx_ < count) break;
    __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    block_ = (block_ + 1) % blockCount_;
    frameIdx_ = 0;
  }
  return b.k;
}

uint32_t AfPacketPort::tx(const TxArgs& a) {
  if (fd_ < 0) return 0;
  uint32_t sent = 0;
  double bytes = 0;
  for (uint32_t base = 0; base < a.n; base += kTxChunk) {
    const uint32_t chunk = a.n - base < kTxChunk ? a.n - base : kTxChunk;
    uint32_t m = 0;
    for (uint32_t j = 0; j < chunk; j++) {
      const uint32_t slot = a.idx[base + j];
      const int32_t start = slot < a.slots ? a.starts[slot] : -1;
      const uint32_t len = slot < a.slots ? a.lens[slot] : 0;
      if (start < 0 || size_t(start) + len > a.arenaLen) {
        ctr_[IO_tx_failed]++;
        continue;
      }
      iov_[2 * m] = {const_cast<VirtioNetHdr*>(&kNoOffload), sizeof(kNoOffload)};
      iov_[2 * m + 1] = {const_cast<uint8_t*>(a.arena) + start, len};
      msgs_[m].msg_hdr.msg_iov = &iov_[2 * m];
      msgs_[m].msg_hdr.msg_iovlen = 2;
      m++;
    }
    uint32_t done = 0;
    while (done < m) {
      const int r = sendmmsg(fd_, msgs_ + done, m - done, MSG_DONTWAIT);
      if (r > 0) {
        for (uint32_t i = done; i < done + uint32_t(r); i++) bytes += double(iov_[2 * i + 1].iov_len);
        done += uint32_t(r);
        sent += uint32_t(r);
        continue;
      }
      const int e = r < 0 ? errno : EAGAIN;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        ctr_[IO_tx_busy] += m - done + (a.n - base - chunk);
        goto out;
      }
      if (e == EMSGSIZE) {
        ctr_[IO_tx_too_big]++;
        done++;
        continue;
      }
      if (e == ENXIO || e == ENETDOWN || e == ENODEV || e == EBADF) {
        // The interface went away or down: the rest of the burst fails the same way.
        ctr_[IO_tx_failed] += m - done + (a.n - base - chunk);
        goto out;
      }
      ctr_[IO_tx_failed]++;  // this frame was refused (ENOBUFS: dropped by the device)
      done++;
    }
  }
out:
  ctr_[IO_tx_frames] += sent;
  ctr_[IO_tx_bytes] += bytes;
  return sent;
}

}  // namespace sfc
