/*
 * XskArena: the memory a worker's XDP sockets register as their UMEM, and the owner of every
 * 2 KiB chunk in it, so that a frame stays where the kernel wrote it from receive to transmit.
 *
 * Layout: [`reserved` chunks: the batch's own slots][pool chunks]. The worker's batch arena
 * (packet/batch.ts) is this memory seen from JavaScript (xskArenaView: an external ArrayBuffer),
 * its slot i being chunk i. The worker's first XDP socket registers the arena as its UMEM and the
 * others share it (XDP_SHARED_UMEM, each with its own fill and completion rings), so a chunk
 * received on one interface can be described on another interface's TX ring as it is. (Registering
 * the same memory once per socket works too, but the kernel then maps it once per socket, and its
 * copies in and out ran at a third of the speed: see the README.) When the socket shared from
 * closes, the kernel keeps the UMEM for the others; a new socket shares any bound one.
 *
 * Chunk ownership (all on the worker's thread): a pool chunk is free (in `pool`), handed to one
 * socket's fill or TX ring (holder[chunk] = that socket's tag, until it comes back through the RX
 * or completion ring), or held by a batch slot (slotChunk[slot]) from receive until transmit hands
 * it to a TX ring or the slot receives again. Reserved chunks never reach the kernel. A socket that
 * closes gives back every chunk its tag still holds (reclaim), so link flaps lose nothing.
 *
 * A private arena (no reserved chunks) serves a socket opened outside any worker (in-process
 * ports): its batch lives elsewhere, so frames are copied in and out as before.
 *
 * Lifetime: a process-wide table by id, reference-counted (the creator, each socket, the
 * JavaScript view); the memory is unmapped with the last reference.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace sfc {

constexpr uint32_t kChunk = 2048;

struct XskArena {
  int id = 0;
  uint8_t* base = nullptr;  // 2 MiB aligned
  size_t len = 0;
  void* map = nullptr;      // the mapping base lies in
  size_t mapLen = 0;
  uint32_t reserved = 0;
  uint32_t chunks = 0;
  // Worker-thread state (see above).
  std::vector<uint64_t> pool;
  std::vector<uint16_t> holder;
  std::vector<int64_t> slotChunk;
  uint16_t lastTag = 0;
  // Bound sockets (any thread, under bindLock): a new one shares the kernel UMEM of the first.
  std::mutex bindLock;
  std::vector<int> bound;

  /** A new arena of `reserved` slot chunks and `poolChunks` pool chunks (one reference); null with *err. */
  static XskArena* create(uint32_t reserved, uint32_t poolChunks, int* err);
  /** The arena `id` with one more reference; null when there is none. */
  static XskArena* acquire(int id);
  /** Drop one reference (the last unmaps it). */
  void release();

  /** Whether a burst's arena is this memory (frames may stay in place). */
  bool isBatchArena(const uint8_t* arena, size_t arenaLen) const { return arena == base && arenaLen == len && reserved > 0; }
  /** A tag for a new socket (never 0). */
  uint16_t newTag();
  /** Free the chunk of `addr` (any address inside it). */
  void give(uint64_t addr) {
    const uint64_t c = addr & ~uint64_t(kChunk - 1);
    holder[c / kChunk] = 0;
    pool.push_back(c);
  }
  /** Take a free chunk for socket `tag`; false when the pool is empty. */
  bool take(uint16_t tag, uint64_t* addr) {
    if (pool.empty()) return false;
    *addr = pool.back();
    pool.pop_back();
    holder[*addr / kChunk] = tag;
    return true;
  }
  /** Slot `slot` now holds the chunk of `addr`; the chunk it held before is freed. */
  void hold(uint32_t slot, uint64_t addr);
  /** Every chunk socket `tag` still held goes back to the pool (the socket closed). */
  void reclaim(uint16_t tag);

 private:
  int refs_ = 1;
};

}  // namespace sfc
