/*
 * sfc_io: the Node-API surface of the packet I/O addon (loaded lazily by io/native.ts).
 *
 * Calls are per burst, never per frame: rxBurst/txBurst take the batch arena and its metadata
 * arrays and move up to a whole batch in one crossing. Sockets can be opened on one thread and
 * attached on another (afpSocket -> fd -> afpAttach), which the runtime uses to join PACKET_FANOUT
 * groups in worker order. Handles are externals; close is idempotent and also happens at GC or
 * when the owning thread's environment ends.
 *
 * Errors thrown by open/attach carry `errno` and `code` (e.g. ENODEV for a missing interface);
 * the burst calls never throw on I/O conditions, they count them (port.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <napi.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "afpacket.h"
#include "afxdp.h"
#include "port.h"
#include "tap.h"

namespace sfc {
namespace {

const char* errnoCode(int err) {
  switch (err) {
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EINVAL: return "EINVAL";
    case ENETDOWN: return "ENETDOWN";
    case ENOMEM: return "ENOMEM";
    case EEXIST: return "EEXIST";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return "EIO";
  }
}

Napi::Value throwErrno(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, errnoCode(err)));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value throwType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

uint32_t optU32(const Napi::Object& o, const char* key, uint32_t def) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : def;
}

bool optBool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : def;
}

RingConfig ringConfig(const Napi::Object& o) {
  RingConfig r;
  r.version = optU32(o, "version", r.version);
  if (r.version == 3) {
    // Many smaller blocks: a partly filled block is retired every retireMs, so a late reader's
    // slack is blockCount x retireMs, whatever the block size (256 KiB still holds a GSO frame).
    r.blockSize = 256u << 10;
    r.blockCount = 16;
  }
  r.blockSize = optU32(o, "blockSize", r.blockSize);
  r.blockCount = optU32(o, "blockCount", r.blockCount);
  r.retireMs = optU32(o, "retireMs", r.retireMs);
  return r;
}

/** Typed array data and length, checked for its element type; false when it is not one. */
template <typename T>
bool typed(napi_env env, napi_value v, napi_typedarray_type want, T** data, size_t* length) {
  napi_typedarray_type type;
  void* p;
  if (napi_get_typedarray_info(env, v, &type, length, &p, nullptr, nullptr) != napi_ok || type != want) return false;
  *data = static_cast<T*>(p);
  return true;
}

Port* portOf(napi_env env, napi_value v) {
  void* p = nullptr;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return nullptr;
  napi_get_value_external(env, v, &p);
  return static_cast<Port*>(p);
}

/** Bind the JS counters array (kept alive by a reference) and wrap the port in an external. */
Napi::Value finishAttach(const Napi::CallbackInfo& info, Port* port, int counterArg, bool readable) {
  Napi::Env env = info.Env();
  if (info.Length() > size_t(counterArg) && info[counterArg].IsTypedArray()) {
    double* data;
    size_t len;
    if (!typed(env, info[counterArg], napi_float64_array, &data, &len) || len < IO_COUNT) {
      delete port;
      return throwType(env, "counters must be a Float64Array of counterNames.length");
    }
    napi_ref ref;
    napi_create_reference(env, info[counterArg], 1, &ref);
    port->setCounters(data, ref);
  }
  const int err = port->init(readable);
  if (err != 0) {
    delete port;
    return throwErrno(env, "uv_poll_init", err);
  }
  return Napi::External<Port>::New(env, port, [](Napi::Env, Port* p) { delete p; });
}

// afpSocket(ifname, {version, blockSize, blockCount, retireMs, fanoutGroup, fanoutDefrag, sndbuf, rcvbuf}): fd
Napi::Value AfpSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsObject()) return throwType(env, "afpSocket(ifname, options)");
  const std::string ifname = info[0].As<Napi::String>();
  const Napi::Object o = info[1].As<Napi::Object>();
  SocketConfig cfg;
  cfg.ring = ringConfig(o);
  Napi::Value g = o.Get("fanoutGroup");
  cfg.fanoutGroup = g.IsNumber() ? g.As<Napi::Number>().Int32Value() : -1;
  cfg.fanoutDefrag = optBool(o, "fanoutDefrag", false);
  cfg.sndbuf = int(optU32(o, "sndbuf", uint32_t(cfg.sndbuf)));
  cfg.rcvbuf = int(optU32(o, "rcvbuf", uint32_t(cfg.rcvbuf)));
  std::string what;
  const int fd = AfPacketPort::openSocket(ifname.c_str(), cfg, &what);
  if (fd < 0) return throwErrno(env, "afpacket " + ifname + ": " + what, -fd);
  return Napi::Number::New(env, fd);
}

// afpAttach(fd, ifname, {version, blockSize, blockCount, maxFrame, maxBurst, ownsFd}, counters?): handle
Napi::Value AfpAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsString() || !info[2].IsObject()) {
    return throwType(env, "afpAttach(fd, ifname, options, counters?)");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const std::string ifname = info[1].As<Napi::String>();
  const Napi::Object o = info[2].As<Napi::Object>();
  sockaddr_ll sll{};
  socklen_t len = sizeof(sll);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sll), &len) < 0 || sll.sll_family != AF_PACKET) {
    return throwErrno(env, "afpacket " + ifname + ": fd " + std::to_string(fd) + " is not a packet socket", EINVAL);
  }
  auto* port = new AfPacketPort(env, fd, optBool(o, "ownsFd", true), ifname.c_str(), sll.sll_ifindex,
                                optU32(o, "maxFrame", 1984), optU32(o, "maxBurst", 256));
  const int err = port->map(ringConfig(o));
  if (err != 0) {
    delete port;
    return throwErrno(env, "afpacket " + ifname + ": mmap", err);
  }
  return finishAttach(info, port, 3, true);
}

// xskArena(slots, slotBytes, poolChunks): id of a new arena for one worker's sockets and batch (xskarena.h)
Napi::Value XskArenaCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) return throwType(env, "xskArena(slots, slotBytes, poolChunks)");
  if (info[1].As<Napi::Number>().Uint32Value() != kChunk) return throwType(env, "xskArena: batch slots must be one UMEM chunk (2048 bytes)");
  int err = 0;
  XskArena* a = XskArena::create(info[0].As<Napi::Number>().Uint32Value(), info[2].As<Napi::Number>().Uint32Value(), &err);
  if (a == nullptr) return throwErrno(env, "afxdp arena", err);
  return Napi::Number::New(env, a->id);
}

// xskArenaView(id): the arena's memory as an ArrayBuffer (once per arena: the worker's batch arena)
Napi::Value XskArenaView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) return throwType(env, "xskArenaView(id)");
  XskArena* a = XskArena::acquire(info[0].As<Napi::Number>().Int32Value());
  if (a == nullptr) return throwErrno(env, "afxdp arena " + std::to_string(info[0].As<Napi::Number>().Int32Value()), ENOENT);
  return Napi::ArrayBuffer::New(env, a->base, a->len, [](Napi::Env, void*, XskArena* held) { held->release(); }, a);
}

// xskArenaRelease(id): drop the creator's reference (the memory goes with the last socket and view)
Napi::Value XskArenaRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) return throwType(env, "xskArenaRelease(id)");
  XskArena* a = XskArena::acquire(info[0].As<Napi::Number>().Int32Value());
  if (a == nullptr) return Napi::Boolean::New(env, false);
  a->release();  // the lookup's reference
  a->release();  // and the creator's
  return Napi::Boolean::New(env, true);
}

// xskOpen(ifname, {queue, frames, needWakeup, arena, gso}): {fd, zeroCopy, sharesUmem, nativeXdp, gso, progId} (afxdp.h; parked until xskAttach)
Napi::Value XskOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsObject()) return throwType(env, "xskOpen(ifname, options)");
  const std::string ifname = info[0].As<Napi::String>();
  const Napi::Object o = info[1].As<Napi::Object>();
  XskConfig cfg;
  cfg.queue = optU32(o, "queue", cfg.queue);
  cfg.frames = optU32(o, "frames", cfg.frames);
  cfg.needWakeup = optBool(o, "needWakeup", cfg.needWakeup);
  cfg.gso = optBool(o, "gso", cfg.gso);
  cfg.arena = int(optU32(o, "arena", 0));
  int err = 0;
  std::string what;
  XskSocket* s = XskSocket::open(ifname.c_str(), cfg, &err, &what);
  if (s == nullptr) return throwErrno(env, "afxdp " + ifname + ": " + what, err);
  Napi::Object r = Napi::Object::New(env);
  r.Set("fd", Napi::Number::New(env, s->fd));
  r.Set("zeroCopy", Napi::Boolean::New(env, s->zeroCopy));
  r.Set("sharesUmem", Napi::Boolean::New(env, s->sharesUmem));
  r.Set("nativeXdp", Napi::Boolean::New(env, s->xdp->native));
  r.Set("gso", Napi::Boolean::New(env, s->gso));
  r.Set("progId", Napi::Number::New(env, s->xdp->progId));
  return r;
}

// xskAttach(fd, ifname, {maxFrame, maxBurst}, counters?): handle (takes the socket xskOpen parked), null when fd is none
Napi::Value XskAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsString() || !info[2].IsObject()) {
    return throwType(env, "xskAttach(fd, ifname, options, counters?)");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const std::string ifname = info[1].As<Napi::String>();
  const Napi::Object o = info[2].As<Napi::Object>();
  XskSocket* s = XskSocket::take(fd);
  if (s == nullptr) return env.Null();
  auto* port = new XskPort(env, s, ifname.c_str(), optU32(o, "maxFrame", 1984), optU32(o, "maxBurst", 256));
  return finishAttach(info, port, 3, true);
}

// ifQueues(ifname): the interface's receive queues (afxdp binds one socket per queue)
Napi::Value IfQueues(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return throwType(env, "ifQueues(ifname)");
  const std::string ifname = info[0].As<Napi::String>();
  const int n = receiveQueues(ifname.c_str());
  if (n < 0) return throwErrno(env, "ETHTOOL_GCHANNELS " + ifname, -n);
  return Napi::Number::New(env, n);
}

// xskDiscard(fd): free a socket xskOpen parked that nobody attached; false when there is none
Napi::Value XskDiscard(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) return throwType(info.Env(), "xskDiscard(fd)");
  return Napi::Boolean::New(info.Env(), XskSocket::discard(info[0].As<Napi::Number>().Int32Value()));
}

// tapOpen(ifname): fd (creates the TAP, up, or attaches to an existing one)
Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return throwType(env, "tapOpen(ifname)");
  const std::string ifname = info[0].As<Napi::String>();
  std::string what;
  const int fd = TapPort::openDevice(ifname.c_str(), &what);
  if (fd < 0) return throwErrno(env, "tap " + ifname + ": " + what, -fd);
  return Napi::Number::New(env, fd);
}

// tapAttach(fd, ifname, {maxFrame, maxBurst, rx, ownsFd}, counters?): handle
Napi::Value TapAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsString() || !info[2].IsObject()) {
    return throwType(env, "tapAttach(fd, ifname, options, counters?)");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const std::string ifname = info[1].As<Napi::String>();
  const Napi::Object o = info[2].As<Napi::Object>();
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return throwErrno(env, "tap " + ifname, ENODEV);
  auto* port = new TapPort(env, fd, optBool(o, "ownsFd", true), ifname.c_str(), int(ifindex), optU32(o, "maxFrame", 1984),
                           optU32(o, "maxBurst", 256));
  return finishAttach(info, port, 3, optBool(o, "rx", true));
}

// rxBurst(handle, arena, starts, lens, from, max, times?): frames received
Napi::Value RxBurst(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  Port* p = portOf(env, info[0]);
  RxArgs a{};
  size_t startsLen, lensLen;
  if (p == nullptr || !typed(env, info[1], napi_uint8_array, &a.arena, &a.arenaLen) ||
      !typed(env, info[2], napi_int32_array, &a.starts, &startsLen) ||
      !typed(env, info[3], napi_uint16_array, &a.lens, &lensLen)) {
    return throwType(info.Env(), "rxBurst(handle, arena, starts, lens, from, max, times?)");
  }
  a.from = info[4].As<Napi::Number>().Uint32Value();
  a.max = info[5].As<Napi::Number>().Uint32Value();
  const size_t slots = startsLen < lensLen ? startsLen : lensLen;
  if (a.from > slots) a.from = uint32_t(slots);
  if (a.max > slots - a.from) a.max = uint32_t(slots - a.from);
  if (info.Length() > 6 && info[6].IsTypedArray()) {
    size_t timesLen;
    if (!typed(env, info[6], napi_float64_array, &a.times, &timesLen) || timesLen < a.from + a.max) a.times = nullptr;
  }
  // A transmit-only share (a TAP fd another worker reads) never takes frames: two readers of one
  // fd would split a flow's frames between workers and reorder them.
  if (p->closed() || !p->receives()) return Napi::Number::New(env, 0);
  return Napi::Number::New(env, p->rx(a));
}

// txBurst(handle, arena, starts, lens, idx, n): frames accepted
Napi::Value TxBurst(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  Port* p = portOf(env, info[0]);
  TxArgs a{};
  uint8_t* arena;
  int32_t* starts;
  uint16_t* lens;
  uint16_t* idx;
  size_t startsLen, lensLen, idxLen;
  if (p == nullptr || !typed(env, info[1], napi_uint8_array, &arena, &a.arenaLen) ||
      !typed(env, info[2], napi_int32_array, &starts, &startsLen) || !typed(env, info[3], napi_uint16_array, &lens, &lensLen) ||
      !typed(env, info[4], napi_uint16_array, &idx, &idxLen)) {
    return throwType(info.Env(), "txBurst(handle, arena, starts, lens, idx, n)");
  }
  a.arena = arena;
  a.starts = starts;
  a.lens = lens;
  a.idx = idx;
  a.slots = startsLen < lensLen ? startsLen : lensLen;
  a.n = info[5].As<Napi::Number>().Uint32Value();
  if (a.n > idxLen) a.n = uint32_t(idxLen);
  if (p->closed()) return Napi::Number::New(env, 0);
  return Napi::Number::New(env, p->tx(a));
}

// onReadable(handle, cb): the callback for arm(); cb(errno) once per arm
Napi::Value OnReadable(const Napi::CallbackInfo& info) {
  Port* p = portOf(info.Env(), info[0]);
  if (p == nullptr || !info[1].IsFunction()) return throwType(info.Env(), "onReadable(handle, callback)");
  p->setCallback(info[1]);
  return info.Env().Undefined();
}

// arm(handle): start the one-shot readiness poll; false when the port cannot poll
Napi::Value Arm(const Napi::CallbackInfo& info) {
  Port* p = portOf(info.Env(), info[0]);
  if (p == nullptr) return throwType(info.Env(), "arm(handle)");
  return Napi::Boolean::New(info.Env(), p->arm());
}

// linkState(handle): 1 up (and running), 0 down, -1 gone; refreshes MTU and kernel drop counts
Napi::Value LinkStateOf(const Napi::CallbackInfo& info) {
  Port* p = portOf(info.Env(), info[0]);
  if (p == nullptr) return throwType(info.Env(), "linkState(handle)");
  return Napi::Number::New(info.Env(), p->linkState());
}

// ifState(ifname): the same by name (backends without a handle)
Napi::Value IfState(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) return throwType(info.Env(), "ifState(ifname)");
  const std::string ifname = info[0].As<Napi::String>();
  return Napi::Number::New(info.Env(), linkStateByName(ifname.c_str()));
}

// ifMtu(ifname): the interface's MTU, 0 when it does not exist
Napi::Value IfMtu(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) return throwType(info.Env(), "ifMtu(ifname)");
  const std::string ifname = info[0].As<Napi::String>();
  return Napi::Number::New(info.Env(), mtuByName(ifname.c_str()));
}

Napi::Value ClosePort(const Napi::CallbackInfo& info) {
  Port* p = portOf(info.Env(), info[0]);
  if (p != nullptr) p->close();
  return info.Env().Undefined();
}

// closeFd(fd): release an fd opened by afpSocket/tapOpen that no port adopted
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  if (info[0].IsNumber()) ::close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// netnsEnter(path): move the calling thread into a network namespace; returns an fd of the old one
Napi::Value NetnsEnter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return throwType(env, "netnsEnter(path)");
  const std::string path = info[0].As<Napi::String>();
  const int prev = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (prev < 0) return throwErrno(env, "open /proc/thread-self/ns/net", errno);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    ::close(prev);
    return throwErrno(env, "setns " + path, err);
  }
  ::close(fd);
  resetControlSocket();
  return Napi::Number::New(env, prev);
}

// netnsRestore(fd): go back to the namespace netnsEnter returned, and close it
Napi::Value NetnsRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) return throwType(env, "netnsRestore(fd)");
  const int fd = info[0].As<Napi::Number>().Int32Value();
  const int r = setns(fd, CLONE_NEWNET);
  const int err = errno;
  ::close(fd);
  resetControlSocket();
  if (r < 0) return throwErrno(env, "setns", err);
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Array names = Napi::Array::New(env, IO_COUNT);
  for (uint32_t i = 0; i < IO_COUNT; i++) names.Set(i, Napi::String::New(env, kIoCounterNames[i]));
  exports.Set("counterNames", names);
  exports.Set("afpSocket", Napi::Function::New(env, AfpSocket, "afpSocket"));
  exports.Set("afpAttach", Napi::Function::New(env, AfpAttach, "afpAttach"));
  exports.Set("xskOpen", Napi::Function::New(env, XskOpen, "xskOpen"));
  exports.Set("xskArena", Napi::Function::New(env, XskArenaCreate, "xskArena"));
  exports.Set("xskArenaView", Napi::Function::New(env, XskArenaView, "xskArenaView"));
  exports.Set("xskArenaRelease", Napi::Function::New(env, XskArenaRelease, "xskArenaRelease"));
  exports.Set("xskAttach", Napi::Function::New(env, XskAttach, "xskAttach"));
  exports.Set("ifQueues", Napi::Function::New(env, IfQueues, "ifQueues"));
  exports.Set("xskDiscard", Napi::Function::New(env, XskDiscard, "xskDiscard"));
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
  exports.Set("tapAttach", Napi::Function::New(env, TapAttach, "tapAttach"));
  exports.Set("rxBurst", Napi::Function::New(env, RxBurst, "rxBurst"));
  exports.Set("txBurst", Napi::Function::New(env, TxBurst, "txBurst"));
  exports.Set("onReadable", Napi::Function::New(env, OnReadable, "onReadable"));
  exports.Set("arm", Napi::Function::New(env, Arm, "arm"));
  exports.Set("linkState", Napi::Function::New(env, LinkStateOf, "linkState"));
  exports.Set("ifState", Napi::Function::New(env, IfState, "ifState"));
  exports.Set("ifMtu", Napi::Function::New(env, IfMtu, "ifMtu"));
  exports.Set("closePort", Napi::Function::New(env, ClosePort, "closePort"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("netnsEnter", Napi::Function::New(env, NetnsEnter, "netnsEnter"));
  exports.Set("netnsRestore", Napi::Function::New(env, NetnsRestore, "netnsRestore"));
  return exports;
}

}  // namespace
}  // namespace sfc

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return sfc::Init(env, exports);
}

NODE_API_MODULE(sfc_io, InitModule)
