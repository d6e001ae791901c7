// AF_XDP port: UMEM, rings, bind, burst receive and transmit (see afxdp.h).
#include "afxdp.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "offload.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
// Linux >= 6.16: frames one copy-mode sendto() may send (default 32).
#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9
#endif

namespace sfc {
namespace {

/** Frames a link of MTU m may carry: the IP packet behind Ethernet and up to two VLAN tags. */
constexpr uint32_t kLinkHeaders = 14 + 8;
/**
 * The passed frames' socket (XskSocket::passFd): a small ring for stray frames of wire size (a
 * queue without a socket), super-frames queued whole beside it (SocketConfig::rcvbuf).
 */
constexpr RingConfig kPassRing{2, 1u << 17, 1, 0};

constexpr uint32_t kKickTries = 64;
constexpr uint32_t kBindTries = 50;
constexpr uint32_t kBindRetryUs = 2000;

std::mutex gParkedLock;
std::vector<XskSocket*> gParked;

int setU32(int fd, int name, uint32_t v) {
  return setsockopt(fd, SOL_XDP, name, &v, sizeof(v));
}

/** Map one ring of `n` entries of `descSize` bytes at page offset `pgoff`. */
bool mapRing(int fd, const xdp_ring_offset& off, uint32_t n, size_t descSize, uint64_t pgoff, XskRing* r) {
  const size_t len = off.desc + n * descSize;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, off_t(pgoff));
  if (p == MAP_FAILED) return false;
  auto* base = static_cast<uint8_t*>(p);
  r->map = p;
  r->mapLen = len;
  r->producer = reinterpret_cast<uint32_t*>(base + off.producer);
  r->consumer = reinterpret_cast<uint32_t*>(base + off.consumer);
  r->flags = reinterpret_cast<uint32_t*>(base + off.flags);
  r->desc = base + off.desc;
  r->size = n;
  r->mask = n - 1;
  return true;
}

void unmapRing(XskRing* r) {
  if (r->map != nullptr) munmap(r->map, r->mapLen);
  r->map = nullptr;
}

inline uint32_t loadAcquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void storeRelease(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline uint64_t* addrs(const XskRing& r) { return static_cast<uint64_t*>(r.desc); }
inline xdp_desc* descs(const XskRing& r) { return static_cast<xdp_desc*>(r.desc); }

double nowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

}  // namespace

namespace {

/** One ethtool request (`cmd` starts with its command word) on `ifname`; 0 or an errno. */
int ethtool(const char* ifname, void* cmd) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  ifreq ifr{};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  ifr.ifr_data = static_cast<char*>(cmd);
  const int r = ioctl(fd, SIOCETHTOOL, &ifr);
  const int err = errno;
  ::close(fd);
  return r < 0 ? err : 0;
}

/** Whether `ifname` is a veth (where a generic-mode program keeps the peer's TSO, afxdp.h). */
bool isVeth(const char* ifname) {
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  return ethtool(ifname, &info) == 0 && strcmp(info.driver, "veth") == 0;
}

}  // namespace

int receiveQueues(const char* ifname) {
  ethtool_channels ch{};
  ch.cmd = ETHTOOL_GCHANNELS;
  const int err = ethtool(ifname, &ch);
  if (err != 0) return err == EOPNOTSUPP ? 1 : -err;
  const uint32_t n = ch.rx_count + ch.combined_count;
  return n == 0 ? 1 : int(n);
}

XskSocket* XskSocket::open(const char* ifname, const XskConfig& cfg, int* err, std::string* what) {
  const unsigned ifindex = if_nametoindex(ifname);
  if (ifindex == 0) {
    *err = ENODEV;
    *what = "if_nametoindex";
    return nullptr;
  }
  const uint32_t frames = cfg.frames < 64 ? 64 : cfg.frames;
  if ((frames & (frames - 1)) != 0) {
    *err = EINVAL;
    *what = "frames must be a power of two";
    return nullptr;
  }
  auto* s = new XskSocket();
  s->ifindex = int(ifindex);
  s->queue = cfg.queue;
  s->needWakeup = cfg.needWakeup;
  const uint32_t ring = frames / 2;
  if (cfg.arena > 0) {
    s->arena = XskArena::acquire(cfg.arena);
  } else {
    int aerr = 0;
    s->arena = XskArena::create(0, frames, &aerr);  // half fill, half transmit
    errno = aerr;
  }
  const char* step = nullptr;
  std::string queueStep;
  xdp_mmap_offsets off{};
  socklen_t offLen = sizeof(off);
  if (s->arena == nullptr) {
    if (cfg.arena > 0) errno = ENOENT;
    step = cfg.arena > 0 ? "no such arena" : "mmap UMEM";
  } else if ((s->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)) < 0) {
    step = "socket(AF_XDP)";
  }
  // From here to bind, no other socket of the arena may come or go (the one shared from must live).
  std::unique_lock<std::mutex> bindHold;
  int shareFd = -1;
  if (step == nullptr) {
    bindHold = std::unique_lock<std::mutex>(s->arena->bindLock);
    if (!s->arena->bound.empty()) shareFd = s->arena->bound.front();
  }
  if (step == nullptr && shareFd < 0) {
    // The arena's first socket registers it; the others share that kernel UMEM (one mapping).
    xdp_umem_reg reg{};
    reg.addr = reinterpret_cast<uint64_t>(s->arena->base);
    reg.len = s->arena->len;
    reg.chunk_size = kChunk;
    reg.headroom = 0;
    if (setsockopt(s->fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) < 0) step = "XDP_UMEM_REG";
  }
  if (step == nullptr) {
    if (setU32(s->fd, XDP_UMEM_FILL_RING, ring) < 0) step = "XDP_UMEM_FILL_RING";
    else if (setU32(s->fd, XDP_UMEM_COMPLETION_RING, ring) < 0) step = "XDP_UMEM_COMPLETION_RING";
    else if (setU32(s->fd, XDP_RX_RING, ring) < 0) step = "XDP_RX_RING";
    else if (setU32(s->fd, XDP_TX_RING, ring) < 0) step = "XDP_TX_RING";
    else if (getsockopt(s->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &offLen) < 0) step = "XDP_MMAP_OFFSETS";
    else if (!mapRing(s->fd, off.rx, ring, sizeof(xdp_desc), XDP_PGOFF_RX_RING, &s->rx)) step = "mmap rx ring";
    else if (!mapRing(s->fd, off.tx, ring, sizeof(xdp_desc), XDP_PGOFF_TX_RING, &s->tx)) step = "mmap tx ring";
    else if (!mapRing(s->fd, off.fr, ring, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING, &s->fill)) step = "mmap fill ring";
    else if (!mapRing(s->fd, off.cr, ring, sizeof(uint64_t), XDP_UMEM_PGOFF_COMPLETION_RING, &s->comp)) step = "mmap completion ring";
  }
  if (step == nullptr) {
    // Best effort (Linux >= 6.16): let one kick send a whole burst in copy mode.
    setU32(s->fd, XDP_MAX_TX_SKB_BUDGET, ring);
    sockaddr_xdp sxdp{};
    sxdp.sxdp_family = AF_XDP;
    sxdp.sxdp_ifindex = ifindex;
    sxdp.sxdp_queue_id = cfg.queue;
    // A shared UMEM's sockets take its mode (copy or zero-copy, need_wakeup) from the first one.
    sxdp.sxdp_flags = shareFd >= 0 ? XDP_SHARED_UMEM : cfg.needWakeup ? XDP_USE_NEED_WAKEUP : 0;
    sxdp.sxdp_shared_umem_fd = shareFd >= 0 ? uint32_t(shareFd) : 0;
    // A socket closed a moment ago frees its queue from a kernel work item: EBUSY for a while.
    int r = -1;
    for (uint32_t tries = 0; tries < kBindTries; tries++) {
      r = bind(s->fd, reinterpret_cast<sockaddr*>(&sxdp), sizeof(sxdp));
      if (r == 0 || errno != EBUSY) break;
      usleep(kBindRetryUs);
    }
    if (r < 0) {
      queueStep = "bind (queue " + std::to_string(cfg.queue) + (errno == EBUSY ? " has another AF_XDP socket)" : ")");
      step = queueStep.c_str();
    } else {
      s->arena->bound.push_back(s->fd);
      s->sharesUmem = shareFd >= 0;
    }
  }
  if (bindHold.owns_lock()) bindHold.unlock();
  if (step == nullptr) {
    xdp_options opts{};
    socklen_t optLen = sizeof(opts);
    s->zeroCopy = getsockopt(s->fd, SOL_XDP, XDP_OPTIONS, &opts, &optLen) == 0 && (opts.flags & XDP_OPTIONS_ZEROCOPY) != 0;
    s->gso = cfg.gso && cfg.arena == 0 && isVeth(ifname);
    if (s->gso && cfg.queue == 0) {
      // Where the passed frames' socket cannot open, the program goes native (no super-frames).
      std::string ignored;
      s->passFd = AfPacketPort::openSocket(ifname, SocketConfig{kPassRing}, &ignored);
      s->gso = s->passFd >= 0;
    }
    // Passed: what the MTU does not allow, and what a chunk could not hold (a jumbo frame).
    const uint32_t mtu = mtuByName(ifname);
    const uint32_t passAbove = std::min(mtu + kLinkHeaders, kChunk - XDP_PACKET_HEADROOM);
    int xerr = 0;
    s->xdp = xdpAcquire(int(ifindex), s->gso, s->gso && mtu > 0 ? passAbove : 0, &xerr, what);
    if (s->xdp == nullptr) {
      *err = xerr;
      s->destroy();
      delete s;
      return nullptr;
    }
    const int merr = xdpAddSocket(s->xdp, cfg.queue, s->fd);
    if (merr != 0) {
      *err = merr;
      *what = "XSKMAP update (queue " + std::to_string(cfg.queue) + ")";
      s->destroy();
      delete s;
      return nullptr;
    }
    std::lock_guard<std::mutex> hold(gParkedLock);
    gParked.push_back(s);
    return s;
  }
  *err = errno;
  *what = step;
  s->destroy();
  delete s;
  return nullptr;
}

XskSocket* XskSocket::take(int fd) {
  std::lock_guard<std::mutex> hold(gParkedLock);
  for (size_t i = 0; i < gParked.size(); i++) {
    XskSocket* s = gParked[i];
    if (s->fd == fd) {
      gParked.erase(gParked.begin() + long(i));
      return s;
    }
  }
  return nullptr;
}

bool XskSocket::discard(int fd) {
  XskSocket* s = take(fd);
  if (s == nullptr) return false;
  s->destroy();
  delete s;
  return true;
}

void XskSocket::destroy() {
  // Closing the socket first takes it out of the XSKMAP and stops the kernel using the rings.
  if (fd >= 0 && arena != nullptr) {
    std::lock_guard<std::mutex> hold(arena->bindLock);
    arena->bound.erase(std::remove(arena->bound.begin(), arena->bound.end(), fd), arena->bound.end());
    ::close(fd);
  } else if (fd >= 0) {
    ::close(fd);
  }
  fd = -1;
  if (passFd >= 0) ::close(passFd);
  passFd = -1;
  unmapRing(&rx);
  unmapRing(&tx);
  unmapRing(&fill);
  unmapRing(&comp);
  if (arena != nullptr) {
    if (tag != 0) arena->reclaim(tag);
    arena->release();
  }
  arena = nullptr;
  xdpRelease(xdp);
  xdp = nullptr;
}

XskPort::XskPort(napi_env env, XskSocket* xsk, const char* ifname, uint32_t maxFrame, uint32_t maxBurst)
    : Port(env, xsk->fd, false, ifname, xsk->ifindex, maxFrame, maxBurst), xsk_(xsk) {
  xsk->tag = xsk->arena->newTag();
  if (xsk->passFd >= 0) {
    // (the socket keeps the fd: xsk->destroy() closes it, after passed_ is gone)
    passed_ = std::make_unique<AfPacketPort>(env, xsk->passFd, false, ifname, xsk->ifindex, maxFrame, maxBurst);
    const int err = passed_->map(kPassRing);
    if (err == 0) {
      passed_->setCounters(ctr_, nullptr);
      alsoPoll_ = xsk->passFd;
    } else {
      passed_.reset();  // the kernel drops what the program passes, as it would without the socket
    }
  }
  topUp();
}

void XskPort::setCounters(double* counters, napi_ref keepAlive) {
  Port::setCounters(counters, keepAlive);
  if (passed_) passed_->setCounters(counters, nullptr);
}

void XskPort::unmap() {
  passed_.reset();
  if (xsk_ == nullptr) return;
  xsk_->destroy();
  delete xsk_;
  xsk_ = nullptr;
}

void XskPort::pollKernelStats() {
  if (passed_) passed_->pollKernelStats();
  if (xsk_ == nullptr) return;
  xdp_statistics st{};
  socklen_t len = sizeof(st);
  if (getsockopt(xsk_->fd, SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return;
  // Cumulative in the kernel: add what is new since the last look.
  const uint64_t lost = st.rx_dropped + st.rx_ring_full + st.rx_fill_ring_empty_descs;
  const uint64_t before = last_.rx_dropped + last_.rx_ring_full + last_.rx_fill_ring_empty_descs;
  ctr_[IO_rx_kernel_drops] += double(lost - before);
  ctr_[IO_tx_failed] += double(st.tx_invalid_descs - last_.tx_invalid_descs);
  last_ = st;
}

uint32_t XskPort::rx(const RxArgs& a) {
  // Super-frames first (see afxdp.h); they count themselves (passed_ shares ctr_).
  const uint32_t passed = passed_ ? passed_->rx(a) : 0;
  if (passed == a.max) return passed;
  RxArgs rest = a;
  rest.from = a.from + passed;
  rest.max = a.max - passed;
  return passed + rxRing(rest);
}

uint32_t XskPort::rxRing(const RxArgs& a) {
  XskSocket* s = xsk_;
  if (s == nullptr) return 0;
  XskArena* arena = s->arena;
  reapCompletions();
  topUp();
  XskRing& rx = s->rx;
  const uint32_t cons = *rx.consumer;
  uint32_t avail = loadAcquire(rx.producer) - cons;
  if (avail == 0) {
    // Copy mode never asks; a zero-copy driver may need a kick to refill its queue.
    if (s->needWakeup && (loadAcquire(s->fill.flags) & XDP_RING_NEED_WAKEUP)) recvfrom(s->fd, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
    return 0;
  }
  if (avail > a.max) avail = a.max;
  const bool inPlace = arena->isBatchArena(a.arena, a.arenaLen) && a.from + avail <= arena->reserved;
  const double t = a.times != nullptr ? nowNs() : 0;
  uint32_t k = 0;
  double bytes = 0;
  for (uint32_t i = 0; i < avail; i++) {
    const xdp_desc& d = descs(rx)[(cons + i) & rx.mask];
    uint8_t* frame = arena->base + d.addr;
    ExpandResult r;
    bool fixed;
    if (inPlace) {
      r = d.len > maxFrame_ ? ExpandResult::TooBig : ExpandResult::Ok;
      fixed = r == ExpandResult::Ok && completePartial(frame, d.len);
    } else {
      VnetInfo vnet;
      const bool partial = partialChecksum(frame, d.len, &vnet);
      const VlanTag noTag{false, 0, 0};
      const SlotSink sink{a.arena, a.arenaLen, a.starts, a.lens, a.from + k, 1, maxFrame_};
      uint32_t written;
      bool segmented;
      r = expandFrame(frame, d.len, noTag, partial ? &vnet : nullptr, sink, &written, &segmented, &fixed);
    }
    if (r == ExpandResult::Ok) {
      if (inPlace) {
        arena->hold(a.from + k, d.addr);
        a.starts[a.from + k] = int32_t(d.addr);
        a.lens[a.from + k] = uint16_t(d.len);
      } else {
        arena->give(d.addr);
      }
      bytes += d.len;
      if (a.times != nullptr) a.times[a.from + k] = t;
      if (fixed) ctr_[IO_rx_csum_completed]++;
      k++;
    } else {
      arena->give(d.addr);
      ctr_[r == ExpandResult::TooBig ? IO_rx_too_big : IO_rx_malformed]++;
    }
  }
  s->fillHeld -= avail;
  storeRelease(rx.consumer, cons + avail);
  topUp();
  ctr_[IO_rx_frames] += k;
  ctr_[IO_rx_bytes] += bytes;
  return k;
}

void XskPort::topUp() {
  XskSocket* s = xsk_;
  XskArena* arena = s->arena;
  // Keep the fill ring full: a TCP sender's burst must find room (a half-full one cost retransmits).
  uint32_t n = s->fill.size - s->fillHeld;
  if (n == 0) return;
  if (n > arena->pool.size()) n = uint32_t(arena->pool.size());
  XskRing& fill = s->fill;
  const uint32_t prod = *fill.producer;
  for (uint32_t i = 0; i < n; i++) arena->take(s->tag, &addrs(fill)[(prod + i) & fill.mask]);
  storeRelease(fill.producer, prod + n);
  s->fillHeld += n;
}

void XskPort::reapCompletions() {
  XskSocket* s = xsk_;
  XskRing& comp = s->comp;
  const uint32_t cons = *comp.consumer;
  const uint32_t n = loadAcquire(comp.producer) - cons;
  for (uint32_t i = 0; i < n; i++) s->arena->give(addrs(comp)[(cons + i) & comp.mask]);
  if (n > 0) storeRelease(comp.consumer, cons + n);
}

void XskPort::kick() {
  XskSocket* s = xsk_;
  for (uint32_t tries = 0; tries < kKickTries; tries++) {
    if (s->needWakeup && (loadAcquire(s->tx.flags) & XDP_RING_NEED_WAKEUP) == 0) return;
    if (sendto(s->fd, nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0 && errno != EAGAIN && errno != EBUSY && errno != ENOBUFS) {
      return;  // ENETDOWN, ENXIO...: the frames stay on the ring until the link is back
    }
    if (s->zeroCopy || loadAcquire(s->tx.consumer) == *s->tx.producer) return;
    // Copy mode stopped at its budget, or the completion ring was full: make room and go on.
    reapCompletions();
  }
}

uint32_t XskPort::tx(const TxArgs& a) {
  XskSocket* s = xsk_;
  if (s == nullptr) return 0;
  XskArena* arena = s->arena;
  reapCompletions();
  const bool inPlace = arena->isBatchArena(a.arena, a.arenaLen);
  XskRing& tx = s->tx;
  const uint32_t prod = *tx.producer;
  const uint32_t room = tx.size - (prod - loadAcquire(tx.consumer));
  uint32_t queued = 0;
  double bytes = 0;
  uint32_t i = 0;
  for (; i < a.n; i++) {
    const uint32_t slot = a.idx[i];
    if (slot >= a.slots) continue;
    const int32_t start = a.starts[slot];
    const uint32_t len = a.lens[slot];
    if (start < 0 || size_t(start) + len > a.arenaLen || len < 14) {
      ctr_[IO_tx_failed]++;
      continue;
    }
    const uint8_t* f = a.arena + start;
    if (len > kChunk || !fitsMtu(f, len, mtu_)) {
      ctr_[IO_tx_too_big]++;
      continue;
    }
    if (queued == room) break;
    uint64_t addr;
    const int64_t held = inPlace && slot < arena->reserved ? arena->slotChunk[slot] : -1;
    if (held >= 0 && start >= held && uint64_t(start) + len <= uint64_t(held) + kChunk) {
      addr = uint64_t(start);  // still where it was received: hand the chunk itself to the kernel
      arena->slotChunk[slot] = -1;
      arena->holder[uint64_t(held) / kChunk] = s->tag;
      ctr_[IO_tx_in_place]++;
    } else if (arena->take(s->tag, &addr)) {
      memcpy(arena->base + addr, f, len);
    } else {
      break;
    }
    xdp_desc& d = descs(tx)[(prod + queued) & tx.mask];
    d.addr = addr;
    d.len = len;
    d.options = 0;
    queued++;
    bytes += len;
  }
  if (i < a.n) ctr_[IO_tx_busy] += a.n - i;
  if (queued > 0) {
    storeRelease(tx.producer, prod + queued);
    kick();
  }
  ctr_[IO_tx_frames] += queued;
  ctr_[IO_tx_bytes] += bytes;
  return queued;
}

}  // namespace sfc
