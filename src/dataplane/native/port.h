/*
 * Port: what the AF_PACKET and TAP backends share — an fd bound to one interface, per-port I/O
 * counters, interface state, and readiness.
 *
 * Readiness is a one-shot uv_poll on the env's own event loop (so each worker thread has its own):
 * arm() starts it, the first readable (or error) event stops it and calls the JS callback once.
 * The JS side breathes until idle and arms again, so an idle dataplane sleeps in epoll. A poll
 * error (interface down or deleted: the kernel sets ENETDOWN on the socket) is reported to the
 * callback as an errno after clearing the socket error, never retried in a loop.
 *
 * Lifetime: close() is idempotent (stop polling, unmap, close the fd when owned). An async cleanup
 * hook (Node-API 8) closes ports a worker forgot, and keeps the env alive until libuv has run the
 * poll handle's close callback: a worker that exits with an open uv_poll would abort the process.
 *
 * Counters: a Float64Array supplied by JS (may live in a SharedArrayBuffer) indexed by IoCounter,
 * incremented in place; the names are exported to JS in this order.
 */
#pragma once

#include <net/if.h>
#include <node_api.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>

namespace sfc {

#define SFC_IO_COUNTERS(X)                                                                            \
  X(rx_frames)         /* frames delivered to the batch (after segmentation) */                      \
  X(rx_bytes)                                                                                        \
  X(rx_too_big)        /* larger than a batch slot (or truncated by the ring): dropped */             \
  X(rx_malformed)      /* GSO/checksum metadata inconsistent with the frame: dropped */              \
  X(rx_gso_frames)     /* GSO super-frames received (and segmented) */                               \
  X(rx_gso_segments)   /* segments they were cut into */                                             \
  X(rx_csum_completed) /* partial checksums completed */                                             \
  X(rx_own_skipped)    /* PACKET_OUTGOING frames skipped */                                          \
  X(rx_kernel_drops)   /* ring full: dropped by the kernel (PACKET_STATISTICS) */                     \
  X(tx_frames)                                                                                       \
  X(tx_bytes)                                                                                        \
  X(tx_too_big)        /* larger than the egress MTU: dropped */                                      \
  X(tx_failed)         /* refused by the kernel (ENOBUFS, ENETDOWN, ...) */                           \
  X(tx_busy)           /* socket buffer full: the rest of the burst was not sent */                   \
  X(tx_in_place)       /* AF_XDP: sent from the chunk it was received in (not copied) */             \
  X(poll_errors)       /* readiness errors (interface down / gone) */

enum IoCounter {
#define SFC_ENUM(name) IO_##name,
  SFC_IO_COUNTERS(SFC_ENUM)
#undef SFC_ENUM
      IO_COUNT
};

extern const char* const kIoCounterNames[IO_COUNT];

/** One receive burst: fill slots starts[from..from+max) of the arena, lens and (optional) times. */
struct RxArgs {
  uint8_t* arena;
  size_t arenaLen;
  int32_t* starts;  // AF_XDP may point a slot at the frame where it was received
  uint16_t* lens;
  double* times;  // may be null
  uint32_t from;
  uint32_t max;
};

/** One transmit burst: the slots idx[0..n) of the arena. */
struct TxArgs {
  const uint8_t* arena;
  size_t arenaLen;
  const int32_t* starts;
  const uint16_t* lens;
  size_t slots;  // length of starts/lens (bounds for idx values)
  const uint16_t* idx;
  uint32_t n;
};

enum LinkState { kLinkGone = -1, kLinkDown = 0, kLinkUp = 1 };

/** State of an interface by name (for backends without a Port, e.g. libpcap). */
LinkState linkStateByName(const char* ifname);

/** The MTU of an interface by name, or 0 when it does not exist. */
uint32_t mtuByName(const char* ifname);

/** Set IFF_UP on an interface (a TAP we created); 0 or -1 with errno. */
int setLinkUp(const char* ifname);

/** Forget this thread's control socket (after the thread changed network namespace). */
void resetControlSocket();

class Port;

/** The uv_poll handles and cleanup-hook registration; outlives its Port until libuv closes them. */
struct PollBox {
  uv_poll_t poll;
  uv_poll_t also;  // a second fd the port reads (Port::alsoPoll_)
  napi_async_cleanup_hook_handle hook = nullptr;
  Port* port = nullptr;
  int handles = 0;  // handles initialised and not yet closed
};

class Port {
 public:
  Port(napi_env env, int fd, bool ownsFd, const char* ifname, int ifindex, uint32_t maxFrame, uint32_t maxBurst);
  virtual ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  /**
   * Set up readiness (uv_poll, of fd_ and alsoPoll_ when set) and the teardown hook; 0 or an errno.
   * A port that is not `readable` is a transmit-only share of another port's fd (a TAP's): it never
   * reads.
   */
  int init(bool readable);
  virtual uint32_t rx(const RxArgs& a) = 0;
  virtual uint32_t tx(const TxArgs& a) = 0;
  LinkState linkState();
  virtual void setCounters(double* counters, napi_ref keepAlive);
  void setCallback(napi_value cb);
  bool arm();
  void close();
  bool closed() const { return closed_; }
  bool receives() const { return receives_; }
  uint32_t mtu() const { return mtu_; }
  /** Add what the kernel counted since the last look (drops) to the counters. */
  virtual void pollKernelStats() {}

 protected:
  virtual void unmap() {}
  double* ctr_;
  int fd_;
  int alsoPoll_ = -1;  // a second fd rx reads (set before init): either one's readiness wakes the port
  const int ifindex_;
  const uint32_t maxFrame_;
  const uint32_t maxBurst_;
  uint32_t mtu_ = 1500;
  bool closed_ = false;
  bool receives_ = true;

 private:
  static void onReadable(uv_poll_t* handle, int status, int events);
  void stopPolls();
  static void onTeardown(napi_async_cleanup_hook_handle hook, void* arg);
  static void onPollClosed(uv_handle_t* handle);
  void callJs(int err);
  void dropRefs();

  napi_env env_;
  const bool ownsFd_;
  char name_[IFNAMSIZ];
  double ownCounters_[IO_COUNT] = {};
  napi_ref countersRef_ = nullptr;
  napi_ref cb_ = nullptr;
  PollBox* box_ = nullptr;
  bool armed_ = false;
};

}  // namespace sfc
