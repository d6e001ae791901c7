// TAP port: /dev/net/tun frames straight into batch slots (see tap.h).
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "offload.h"

namespace sfc {

int TapPort::openDevice(const char* ifname, std::string* what) {
  const bool existed = if_nametoindex(ifname) != 0;
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    *what = "open /dev/net/tun";
    return -errno;
  }
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    const int err = errno;
    ::close(fd);
    *what = "TUNSETIFF";
    return -err;
  }
  if (!existed && setLinkUp(ifname) != 0) {
    const int err = errno;
    ::close(fd);
    *what = "SIOCSIFFLAGS";
    return -err;
  }
  return fd;
}

uint32_t TapPort::rx(const RxArgs& a) {
  if (fd_ < 0) return 0;
  uint32_t k = 0;
  double bytes = 0;
  double now = -1;
  while (k < a.max) {
    const int32_t start = a.starts[a.from + k];
    if (start < 0 || size_t(start) + maxFrame_ > a.arenaLen) break;
    iovec iov[2] = {{a.arena + start, maxFrame_}, {overflow_, kOverflow}};
    const ssize_t n = readv(fd_, iov, 2);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: drained; an error (device gone) is reported by the poll
    if (uint32_t(n) > maxFrame_) {
      ctr_[IO_rx_too_big]++;
      continue;
    }
    a.lens[a.from + k] = uint16_t(n);
    if (a.times != nullptr) {
      if (now < 0) {
        timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
      }
      a.times[a.from + k] = now;
    }
    bytes += double(n);
    k++;
  }
  ctr_[IO_rx_frames] += k;
  ctr_[IO_rx_bytes] += bytes;
  return k;
}

uint32_t TapPort::tx(const TxArgs& a) {
  if (fd_ < 0) return 0;
  uint32_t sent = 0;
  double bytes = 0;
  for (uint32_t j = 0; j < a.n; j++) {
    const uint32_t slot = a.idx[j];
    const int32_t start = slot < a.slots ? a.starts[slot] : -1;
    const uint32_t len = slot < a.slots ? a.lens[slot] : 0;
    if (start < 0 || size_t(start) + len > a.arenaLen) {
      ctr_[IO_tx_failed]++;
      continue;
    }
    const uint8_t* frame = a.arena + start;
    if (!fitsMtu(frame, len, mtu_)) {
      ctr_[IO_tx_too_big]++;
      continue;
    }
    ssize_t r;
    do {
      r = write(fd_, frame, len);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      sent++;
      bytes += double(len);
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ctr_[IO_tx_busy] += a.n - j;
      break;
    }
    if (errno == EIO || errno == EBADFD || errno == ENODEV || errno == EBADF) {
      ctr_[IO_tx_failed] += a.n - j;  // device down or gone: the rest fails alike
      break;
    }
    ctr_[IO_tx_failed]++;
  }
  ctr_[IO_tx_frames] += sent;
  ctr_[IO_tx_bytes] += bytes;
  return sent;
}

}  // namespace sfc
