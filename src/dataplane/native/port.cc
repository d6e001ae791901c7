// Port: shared fd lifetime, readiness, interface state and counters (see port.h).
#include "port.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <utility>

namespace sfc {

const char* const kIoCounterNames[IO_COUNT] = {
#define SFC_NAME(name) #name,
    SFC_IO_COUNTERS(SFC_NAME)
#undef SFC_NAME
};

namespace {

/** One AF_INET datagram socket per thread for interface ioctls, closed when the thread ends. */
struct ControlSocket {
  int fd = -1;
  ~ControlSocket() {
    if (fd >= 0) ::close(fd);
  }
  int get() {
    if (fd < 0) fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    return fd;
  }
};
thread_local ControlSocket control;

LinkState flagsState(int ctl, ifreq* ifr) {
  if (ioctl(ctl, SIOCGIFFLAGS, ifr) < 0) return kLinkGone;
  const short flags = ifr->ifr_flags;
  return (flags & IFF_UP) && (flags & IFF_RUNNING) ? kLinkUp : kLinkDown;
}

}  // namespace

void resetControlSocket() {
  if (control.fd >= 0) ::close(control.fd);
  control.fd = -1;
}

LinkState linkStateByName(const char* ifname) {
  ifreq ifr{};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  return flagsState(control.get(), &ifr);
}

uint32_t mtuByName(const char* ifname) {
  ifreq ifr{};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  return ioctl(control.get(), SIOCGIFMTU, &ifr) < 0 ? 0 : uint32_t(ifr.ifr_mtu);
}

int setLinkUp(const char* ifname) {
  const int ctl = control.get();
  ifreq ifr{};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (ioctl(ctl, SIOCGIFFLAGS, &ifr) < 0) return -1;
  ifr.ifr_flags |= IFF_UP;
  return ioctl(ctl, SIOCSIFFLAGS, &ifr) < 0 ? -1 : 0;
}

Port::Port(napi_env env, int fd, bool ownsFd, const char* ifname, int ifindex, uint32_t maxFrame, uint32_t maxBurst)
    : ctr_(ownCounters_), fd_(fd), ifindex_(ifindex), maxFrame_(maxFrame), maxBurst_(maxBurst), env_(env), ownsFd_(ownsFd) {
  strncpy(name_, ifname, IFNAMSIZ - 1);
  name_[IFNAMSIZ - 1] = 0;
}

Port::~Port() {
  close();
}

int Port::init(bool readable) {
  box_ = new PollBox();
  box_->port = this;
  receives_ = readable;
  if (readable) {
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env_, &loop) != napi_ok) return EINVAL;
    for (auto [handle, fd] : {std::pair{&box_->poll, fd_}, std::pair{&box_->also, alsoPoll_}}) {
      if (fd < 0) continue;
      int r = uv_poll_init(loop, handle, fd);
      if (r < 0) return -r;
      handle->data = box_;
      box_->handles++;
    }
  }
  if (napi_add_async_cleanup_hook(env_, onTeardown, box_, &box_->hook) != napi_ok) box_->hook = nullptr;
  linkState();
  return 0;
}

void Port::setCounters(double* counters, napi_ref keepAlive) {
  if (countersRef_ != nullptr) napi_delete_reference(env_, countersRef_);
  ctr_ = counters;
  countersRef_ = keepAlive;
}

void Port::setCallback(napi_value cb) {
  if (cb_ != nullptr) napi_delete_reference(env_, cb_);
  cb_ = nullptr;
  napi_create_reference(env_, cb, 1, &cb_);
}

bool Port::arm() {
  if (closed_ || box_ == nullptr || box_->handles == 0 || cb_ == nullptr) return false;
  if (armed_) return true;
  if (uv_poll_start(&box_->poll, UV_READABLE, onReadable) < 0) return false;
  if (alsoPoll_ >= 0 && uv_poll_start(&box_->also, UV_READABLE, onReadable) < 0) {
    uv_poll_stop(&box_->poll);
    return false;
  }
  armed_ = true;
  return true;
}

void Port::stopPolls() {
  uv_poll_stop(&box_->poll);
  if (alsoPoll_ >= 0) uv_poll_stop(&box_->also);
}

void Port::onReadable(uv_poll_t* handle, int status, int) {
  PollBox* box = static_cast<PollBox*>(handle->data);
  Port* p = box->port;
  if (p == nullptr) return;
  p->stopPolls();
  p->armed_ = false;
  int err = 0;
  if (status < 0) {
    // libuv stops a poll on POLLERR; read the socket error so that the next arm() does not
    // report the same condition again (harmless ENOTSOCK for a TAP fd).
    socklen_t len = sizeof(err);
    if (getsockopt(handle == &box->poll ? p->fd_ : p->alsoPoll_, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0) err = -status;
    p->ctr_[IO_poll_errors]++;
  }
  p->callJs(err);
}

void Port::callJs(int err) {
  if (cb_ == nullptr) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value fn, recv, arg, result;
  if (napi_get_reference_value(env_, cb_, &fn) == napi_ok && fn != nullptr && napi_get_global(env_, &recv) == napi_ok &&
      napi_create_int32(env_, err, &arg) == napi_ok) {
    if (napi_make_callback(env_, nullptr, recv, fn, 1, &arg, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env_, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env_, &exc);
        napi_fatal_exception(env_, exc);
      }
    }
  }
  napi_close_handle_scope(env_, scope);
}

LinkState Port::linkState() {
  if (closed_) return kLinkGone;
  const int ctl = control.get();
  ifreq ifr{};
  ifr.ifr_ifindex = ifindex_;
  // The ifindex must still exist under our name: a deleted (or renamed) interface is gone even if
  // another one now carries the name.
  if (ioctl(ctl, SIOCGIFNAME, &ifr) < 0 || strncmp(ifr.ifr_name, name_, IFNAMSIZ) != 0) return kLinkGone;
  LinkState s = flagsState(ctl, &ifr);
  if (ioctl(ctl, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu > 0) mtu_ = uint32_t(ifr.ifr_mtu);
  pollKernelStats();
  return s;
}

void Port::close() {
  if (closed_) return;
  closed_ = true;
  armed_ = false;
  PollBox* box = box_;
  box_ = nullptr;
  if (box != nullptr) {
    box->port = nullptr;
    if (box->handles > 0) {
      // (stopping removes the fds from epoll before they are closed below)
      for (uv_poll_t* handle : {&box->poll, &box->also}) {
        if (handle->data != box) continue;
        uv_poll_stop(handle);
        uv_close(reinterpret_cast<uv_handle_t*>(handle), onPollClosed);
      }
    } else {
      if (box->hook != nullptr) napi_remove_async_cleanup_hook(box->hook);
      delete box;
    }
  }
  unmap();
  if (ownsFd_ && fd_ >= 0) ::close(fd_);
  fd_ = -1;
  dropRefs();
}

void Port::dropRefs() {
  ctr_ = ownCounters_;
  if (countersRef_ != nullptr) napi_delete_reference(env_, countersRef_);
  if (cb_ != nullptr) napi_delete_reference(env_, cb_);
  countersRef_ = nullptr;
  cb_ = nullptr;
}

void Port::onTeardown(napi_async_cleanup_hook_handle, void* arg) {
  PollBox* box = static_cast<PollBox*>(arg);
  // A port still open at env teardown closes now; an already closing one removes the hook from
  // its close callback.
  if (box->port != nullptr) box->port->close();
}

void Port::onPollClosed(uv_handle_t* handle) {
  PollBox* box = static_cast<PollBox*>(handle->data);
  if (--box->handles > 0) return;
  if (box->hook != nullptr) napi_remove_async_cleanup_hook(box->hook);
  delete box;
}

}  // namespace sfc
