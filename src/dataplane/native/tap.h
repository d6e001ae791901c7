/*
 * TAP port: /dev/net/tun in IFF_TAP | IFF_NO_PI mode, non-blocking, without IFF_VNET_HDR.
 *
 * Without a virtio header the kernel never hands a TAP reader GSO frames or partial checksums (the
 * device offers no offloads), so frames are read straight into batch slots: a burst is a readv()
 * loop until EAGAIN or `max` (the second iovec catches oversize frames so they are counted, not
 * truncated). Transmit is one write() per frame inside one native call; frames larger than the
 * device MTU are counted and dropped.
 *
 * With several workers the runtime opens one fd per TAP and shares it: every worker may write,
 * only one reads (a single-queue TAP has one receive queue).
 */
#pragma once

#include <string>

#include "port.h"

namespace sfc {

class TapPort : public Port {
 public:
  /** Create the TAP (or attach to an existing one of that name); returns the fd or -errno. */
  static int openDevice(const char* ifname, std::string* what);
  using Port::Port;
  uint32_t rx(const RxArgs& a) override;
  uint32_t tx(const TxArgs& a) override;

 private:
  static constexpr size_t kOverflow = 65536;
  uint8_t overflow_[kOverflow];
};

}  // namespace sfc
