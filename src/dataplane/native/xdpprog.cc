// xdpprog: the redirect-to-XSKMAP program, loaded and attached with raw bpf() calls (see xdpprog.h).
#include "xdpprog.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <iterator>
#include <mutex>
#include <vector>

namespace sfc {
namespace {

constexpr uint32_t kMaxQueues = 64;
constexpr int kXdpPass = 2;  // XDP_PASS
constexpr int16_t kDataOffset = 0;           // offsetof(struct xdp_md, data)
constexpr int16_t kDataEndOffset = 4;        // offsetof(struct xdp_md, data_end)
constexpr int16_t kRxQueueIndexOffset = 16;  // offsetof(struct xdp_md, rx_queue_index)
/** The largest constant the verifier lets a program add to a packet pointer (MAX_PACKET_OFF). */
constexpr uint32_t kMaxPacketOff = 0xffff;

long sysBpf(int cmd, bpf_attr* attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

/**
 * [when passAbove > 0: if ctx->data + passAbove < ctx->data_end, return XDP_PASS;]
 * r2 = ctx->rx_queue_index; r1 = &xsks; r3 = XDP_PASS; r0 = bpf_redirect_map(r1, r2, r3); exit
 */
std::vector<bpf_insn> redirectProgram(int mapFd, uint32_t passAbove) {
  std::vector<bpf_insn> prog;
  if (passAbove > 0) {
    prog = {
        insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0),
        insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1, kDataOffset, 0),
        insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_3, BPF_REG_1, kDataEndOffset, 0),
        insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, int32_t(passAbove + 1)),
        insn(BPF_JMP | BPF_JGT | BPF_X, BPF_REG_2, BPF_REG_3, 2, 0),  // short enough: to the redirect
        insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, kXdpPass),
        insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
        insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0),
    };
  }
  const bpf_insn redirect[] = {
      insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1, kRxQueueIndexOffset, 0),
      insn(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, mapFd),
      insn(0, 0, 0, 0, 0),  // second half of the 64-bit immediate
      insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, kXdpPass),
      insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map),
      insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  prog.insert(prog.end(), std::begin(redirect), std::end(redirect));
  return prog;
}

int createMap() {
  bpf_attr a{};
  a.map_type = BPF_MAP_TYPE_XSKMAP;
  a.key_size = 4;
  a.value_size = 4;
  a.max_entries = kMaxQueues;
  strncpy(a.map_name, "sfc_xsks", sizeof(a.map_name) - 1);
  return int(sysBpf(BPF_MAP_CREATE, &a));
}

int loadProgram(int mapFd, uint32_t passAbove) {
  std::vector<bpf_insn> prog = redirectProgram(mapFd, passAbove < kMaxPacketOff ? passAbove : 0);
  static const char kLicense[] = "Dual BSD/GPL";
  bpf_attr a{};
  a.prog_type = BPF_PROG_TYPE_XDP;
  a.insn_cnt = uint32_t(prog.size());
  a.insns = reinterpret_cast<uint64_t>(prog.data());
  a.license = reinterpret_cast<uint64_t>(kLicense);
  a.expected_attach_type = BPF_XDP;
  strncpy(a.prog_name, "sfc_xsk_redir", sizeof(a.prog_name) - 1);
  return int(sysBpf(BPF_PROG_LOAD, &a));
}

int createLink(int progFd, int ifindex, uint32_t flags) {
  bpf_attr a{};
  a.link_create.prog_fd = uint32_t(progFd);
  a.link_create.target_ifindex = uint32_t(ifindex);
  a.link_create.attach_type = BPF_XDP;
  a.link_create.flags = flags;
  return int(sysBpf(BPF_LINK_CREATE, &a));
}

uint32_t programId(int progFd) {
  bpf_prog_info info{};
  bpf_attr a{};
  a.info.bpf_fd = uint32_t(progFd);
  a.info.info_len = sizeof(info);
  a.info.info = reinterpret_cast<uint64_t>(&info);
  return sysBpf(BPF_OBJ_GET_INFO_BY_FD, &a) == 0 ? info.id : 0;
}

uint64_t currentNetns() {
  struct stat st{};
  return stat("/proc/thread-self/ns/net", &st) == 0 ? uint64_t(st.st_ino) : 0;
}

std::mutex gLock;
std::vector<XdpAttachment*> gAttachments;

void closeAll(XdpAttachment* a) {
  if (a->linkFd >= 0) ::close(a->linkFd);
  if (a->progFd >= 0) ::close(a->progFd);
  if (a->mapFd >= 0) ::close(a->mapFd);
  a->linkFd = a->progFd = a->mapFd = -1;
}

}  // namespace

XdpAttachment* xdpAcquire(int ifindex, bool generic, uint32_t passAbove, int* err, std::string* what) {
  const uint64_t netns = currentNetns();
  std::lock_guard<std::mutex> hold(gLock);
  for (XdpAttachment* a : gAttachments) {
    if (a->netns == netns && a->ifindex == ifindex) {
      a->refs++;
      return a;
    }
  }
  auto* a = new XdpAttachment();
  a->netns = netns;
  a->ifindex = ifindex;
  a->mapFd = createMap();
  if (a->mapFd < 0) {
    *what = "BPF_MAP_CREATE (XSKMAP)";
  } else if ((a->progFd = loadProgram(a->mapFd, passAbove)) < 0) {
    *what = "BPF_PROG_LOAD (XDP)";
  } else {
    a->linkFd = generic ? -1 : createLink(a->progFd, ifindex, XDP_FLAGS_DRV_MODE);
    a->native = a->linkFd >= 0;
    // EBUSY/EEXIST: another program is attached (not ours to replace): no generic fallback either.
    if (generic || (a->linkFd < 0 && errno != EBUSY && errno != EEXIST)) a->linkFd = createLink(a->progFd, ifindex, XDP_FLAGS_SKB_MODE);
    if (a->linkFd < 0) *what = errno == EBUSY || errno == EEXIST ? "BPF_LINK_CREATE (another XDP program is attached)" : "BPF_LINK_CREATE (XDP)";
  }
  if (a->linkFd < 0) {
    *err = errno;
    closeAll(a);
    delete a;
    return nullptr;
  }
  a->progId = programId(a->progFd);
  a->refs = 1;
  gAttachments.push_back(a);
  return a;
}

int xdpAddSocket(XdpAttachment* a, uint32_t queue, int xskFd) {
  if (queue >= kMaxQueues) return EINVAL;
  bpf_attr attr{};
  attr.map_fd = uint32_t(a->mapFd);
  attr.key = reinterpret_cast<uint64_t>(&queue);
  attr.value = reinterpret_cast<uint64_t>(&xskFd);
  attr.flags = BPF_ANY;
  return sysBpf(BPF_MAP_UPDATE_ELEM, &attr) == 0 ? 0 : errno;
}

void xdpRelease(XdpAttachment* a) {
  if (a == nullptr) return;
  std::lock_guard<std::mutex> hold(gLock);
  if (--a->refs > 0) return;
  for (size_t i = 0; i < gAttachments.size(); i++) {
    if (gAttachments[i] == a) {
      gAttachments.erase(gAttachments.begin() + long(i));
      break;
    }
  }
  closeAll(a);
  delete a;
}

}  // namespace sfc
