// XskArena: the shared UMEM memory and its chunk ownership (see xskarena.h).
#include "xskarena.h"

#include <errno.h>
#include <sys/mman.h>

#include <cstring>
#include <map>
#include <mutex>

namespace sfc {
namespace {

constexpr size_t kHugePage = size_t(2) << 20;

std::mutex gArenasLock;
std::map<int, XskArena*> gArenas;
int gLastId = 0;

}  // namespace

XskArena* XskArena::create(uint32_t reserved, uint32_t poolChunks, int* err) {
  const uint64_t chunks = uint64_t(reserved) + poolChunks;
  if (poolChunks == 0 || chunks > (uint64_t(1) << 20)) {
    *err = EINVAL;
    return nullptr;
  }
  const size_t len = size_t(chunks) * kChunk;
  // On 2 MiB pages where the kernel has them (transparent huge pages): frames are read where they
  // arrived, all over the arena, and 4 KiB pages would cost a TLB miss on most of them.
  const size_t mapLen = len + kHugePage;
  void* mem = mmap(nullptr, mapLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    *err = errno;
    return nullptr;
  }
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem) + kHugePage - 1) & ~uintptr_t(kHugePage - 1));
  madvise(base, len, MADV_HUGEPAGE);  // best effort
  memset(base, 0, len);               // populate now, not on the data path
  auto* a = new XskArena();
  a->map = mem;
  a->mapLen = mapLen;
  a->base = base;
  a->len = len;
  a->reserved = reserved;
  a->chunks = uint32_t(chunks);
  a->holder.assign(a->chunks, 0);
  a->slotChunk.assign(reserved, -1);
  a->pool.reserve(poolChunks);
  // Popped from the back: the lowest chunks go out first.
  for (uint32_t c = a->chunks; c-- > reserved;) a->pool.push_back(uint64_t(c) * kChunk);
  std::lock_guard<std::mutex> hold(gArenasLock);
  a->id = ++gLastId;
  gArenas[a->id] = a;
  return a;
}

XskArena* XskArena::acquire(int id) {
  std::lock_guard<std::mutex> hold(gArenasLock);
  auto it = gArenas.find(id);
  if (it == gArenas.end()) return nullptr;
  it->second->refs_++;
  return it->second;
}

void XskArena::release() {
  {
    std::lock_guard<std::mutex> hold(gArenasLock);
    if (--refs_ > 0) return;
    gArenas.erase(id);
  }
  munmap(map, mapLen);
  delete this;
}

uint16_t XskArena::newTag() {
  lastTag = lastTag == UINT16_MAX ? 1 : uint16_t(lastTag + 1);
  return lastTag;
}

void XskArena::hold(uint32_t slot, uint64_t addr) {
  const int64_t before = slotChunk[slot];
  if (before >= 0) give(uint64_t(before));
  slotChunk[slot] = int64_t(addr & ~uint64_t(kChunk - 1));
}

void XskArena::reclaim(uint16_t tag) {
  for (uint32_t c = reserved; c < chunks; c++) {
    if (holder[c] == tag) give(uint64_t(c) * kChunk);
  }
}

}  // namespace sfc
