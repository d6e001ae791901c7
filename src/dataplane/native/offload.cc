// offload: VLAN tag re-insertion, partial checksum completion, GSO segmentation (see offload.h).
#include "offload.h"

#include <cstring>

namespace sfc {
namespace {

constexpr uint8_t kNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcp4 = 1;
constexpr uint8_t kGsoTcp6 = 4;
constexpr uint8_t kGsoUdpL4 = 5;
constexpr uint8_t kGsoEcn = 0x80;

constexpr uint16_t kEthVlan = 0x8100;
constexpr uint16_t kEthQinq = 0x88a8;
constexpr uint16_t kEthIp4 = 0x0800;
constexpr uint16_t kEthIp6 = 0x86dd;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoSctp = 132;

constexpr uint8_t kTcpFin = 0x01;
constexpr uint8_t kTcpPsh = 0x08;
constexpr uint8_t kTcpCwr = 0x80;

inline uint32_t rd16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }
inline uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline void wr16(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void wr32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

/** One's-complement sum of big-endian words (an odd tail is padded with zero), not folded. */
uint64_t sum16(const uint8_t* p, size_t n, uint64_t acc) {
  while (n >= 4) {
    acc += rd32(p);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    acc += rd16(p);
    p += 2;
    n -= 2;
  }
  if (n == 1) acc += uint32_t(p[0]) << 8;
  return acc;
}

/** Fold to 16 bits and complement: the value stored in a checksum field. */
uint32_t foldComplement(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return ~uint32_t(acc) & 0xffff;
}

struct Crc32cTable {
  uint32_t t[256];
  constexpr Crc32cTable() : t() {
    for (uint32_t n = 0; n < 256; n++) {
      uint32_t c = n;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[n] = c;
    }
  }
};
constexpr Crc32cTable kCrc32c;

/** SCTP's CRC32c over p[0..n) with its checksum field (bytes 8..11) read as zero. */
uint32_t sctpCrc(const uint8_t* p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t k = 0; k < n; k++) {
    uint8_t byte = (k >= 8 && k < 12) ? 0 : p[k];
    crc = kCrc32c.t[(crc ^ byte) & 0xff] ^ (crc >> 8);
  }
  return ~crc;
}

/** Offset of the L3 header and its ethertype, after any VLAN tags left in the frame. */
bool findL3(const uint8_t* f, uint32_t len, uint32_t* l3, uint32_t* etherType) {
  uint32_t off = 12;
  if (len < off + 2) return false;
  uint32_t et = rd16(f + off);
  while (et == kEthVlan || et == kEthQinq) {
    off += 4;
    if (len < off + 2) return false;
    et = rd16(f + off);
  }
  *l3 = off + 2;
  *etherType = et;
  return true;
}

/** The IP protocol of the frame's L3 header (IPv6: the first next-header), or -1. */
int ipProto(const uint8_t* f, uint32_t len) {
  uint32_t l3, et;
  if (!findL3(f, len, &l3, &et)) return -1;
  if (et == kEthIp4 && l3 + 20 <= len) return f[l3 + 9];
  if (et == kEthIp6 && l3 + 40 <= len) return f[l3 + 6];
  return -1;
}

/** Copy the first n bytes of a frame, putting the VLAN tag back after the MACs when shift is 4. */
void copyWithTag(uint8_t* dst, const uint8_t* src, uint32_t n, const VlanTag& tag, uint32_t shift) {
  if (shift == 0) {
    memcpy(dst, src, n);
    return;
  }
  memcpy(dst, src, 12);
  wr16(dst + 12, tag.tpid);
  wr16(dst + 14, tag.tci);
  memcpy(dst + 16, src + 12, n - 12);
}

uint8_t* slotAt(const SlotSink& sink, uint32_t k) {
  int32_t start = sink.starts[sink.from + k];
  if (start < 0 || size_t(start) + sink.maxFrame > sink.arenaLen) return nullptr;
  return sink.arena + start;
}

/** Finish a CHECKSUM_PARTIAL frame: the field holds the pseudo-header sum; sum the rest over it. */
bool completeChecksum(uint8_t* f, uint32_t len, uint32_t start, uint32_t offset) {
  if (start + offset + 2 > len) return false;
  if (offset == 8 && start + 12 <= len && ipProto(f, len) == kProtoSctp) {
    uint32_t crc = sctpCrc(f + start, len - start);
    uint8_t* at = f + start + 8;
    at[0] = uint8_t(crc);
    at[1] = uint8_t(crc >> 8);
    at[2] = uint8_t(crc >> 16);
    at[3] = uint8_t(crc >> 24);
    return true;
  }
  uint32_t v = foldComplement(sum16(f + start, len - start, 0));
  if (v == 0 && offset == 6) v = 0xffff;  // UDP sends a computed zero as all ones
  wr16(f + start + offset, v);
  return true;
}

/** Pseudo-header sum for an L4 checksum (IPv4 or IPv6 addresses, protocol, L4 length). */
uint64_t pseudoSum(const uint8_t* f, uint32_t l3, bool v4, uint8_t proto, uint32_t l4len) {
  uint64_t acc = v4 ? sum16(f + l3 + 12, 8, 0) : sum16(f + l3 + 8, 32, 0);
  return acc + proto + l4len;
}

ExpandResult segment(const uint8_t* frame, uint32_t len, const VlanTag& tag, uint32_t shift, const VnetInfo& vnet,
                     const SlotSink& sink, uint32_t* written) {
  const uint8_t type = vnet.gsoType & ~kGsoEcn;
  uint32_t l3, et;
  if (!findL3(frame, len, &l3, &et)) return ExpandResult::Malformed;
  const bool v4 = et == kEthIp4;
  if (!v4 && et != kEthIp6) return ExpandResult::Malformed;
  if ((type == kGsoTcp4 && !v4) || (type == kGsoTcp6 && v4)) return ExpandResult::Malformed;
  if (type != kGsoTcp4 && type != kGsoTcp6 && type != kGsoUdpL4) return ExpandResult::Malformed;
  const bool tcp = type != kGsoUdpL4;
  const uint32_t ipHdr = v4 ? (frame[l3] & 0xf) * 4u : 40u;
  const uint32_t l4 = vnet.csumStart;  // GSO frames always carry a partial checksum at L4
  if (l3 + ipHdr > len || ipHdr < 20 || l4 < l3 + ipHdr || l4 + (tcp ? 20u : 8u) > len) return ExpandResult::Malformed;
  const uint32_t l4Hdr = tcp ? (frame[l4 + 12] >> 4) * 4u : 8u;
  const uint32_t hdr = l4 + l4Hdr;
  if (l4Hdr < (tcp ? 20u : 8u) || hdr > len) return ExpandResult::Malformed;
  const uint32_t mss = vnet.gsoSize;
  const uint32_t payload = len - hdr;
  if (mss == 0 || payload == 0) return ExpandResult::Malformed;
  const uint32_t n = (payload + mss - 1) / mss;
  if (shift + hdr + (n > 1 ? mss : payload) > sink.maxFrame) return ExpandResult::TooBig;
  if (n > sink.room) return ExpandResult::NoRoom;
  for (uint32_t s = 0; s < n; s++) {
    if (slotAt(sink, s) == nullptr) return ExpandResult::Malformed;
  }

  const uint32_t seq0 = tcp ? rd32(frame + l4 + 4) : 0;
  const uint32_t id0 = v4 ? rd16(frame + l3 + 4) : 0;
  const uint8_t flags0 = tcp ? frame[l4 + 13] : 0;
  const uint8_t proto = tcp ? kProtoTcp : kProtoUdp;
  const uint32_t L3 = l3 + shift;
  const uint32_t L4 = l4 + shift;
  for (uint32_t s = 0; s < n; s++) {
    const uint32_t chunk = s + 1 < n ? mss : payload - s * mss;
    uint8_t* d = slotAt(sink, s);
    copyWithTag(d, frame, hdr, tag, shift);
    memcpy(d + shift + hdr, frame + hdr + s * mss, chunk);
    const uint32_t outLen = shift + hdr + chunk;
    const uint32_t l4len = outLen - L4;
    if (v4) {
      wr16(d + L3 + 2, outLen - L3);
      wr16(d + L3 + 4, id0 + s);
      wr16(d + L3 + 10, 0);
      wr16(d + L3 + 10, foldComplement(sum16(d + L3, ipHdr, 0)));
    } else {
      wr16(d + L3 + 4, outLen - L3 - 40);
    }
    uint32_t csumAt;
    if (tcp) {
      wr32(d + L4 + 4, seq0 + s * mss);
      uint8_t f = flags0;
      if (s + 1 < n) f &= uint8_t(~(kTcpFin | kTcpPsh));
      if (s > 0) f &= uint8_t(~kTcpCwr);
      d[L4 + 13] = f;
      csumAt = L4 + 16;
    } else {
      wr16(d + L4 + 4, l4len);
      csumAt = L4 + 6;
    }
    wr16(d + csumAt, 0);
    uint32_t v = foldComplement(sum16(d + L4, l4len, pseudoSum(d, L3, v4, proto, l4len)));
    if (v == 0 && !tcp) v = 0xffff;
    wr16(d + csumAt, v);
    sink.lens[sink.from + s] = uint16_t(outLen);
  }
  *written = n;
  return ExpandResult::Ok;
}

}  // namespace

ExpandResult expandFrame(const uint8_t* frame, uint32_t len, const VlanTag& tag, const VnetInfo* vnet,
                         const SlotSink& sink, uint32_t* written, bool* segmented, bool* csumFixed) {
  *written = 0;
  *segmented = false;
  *csumFixed = false;
  const uint32_t shift = (tag.present && len >= 12) ? 4 : 0;
  if (vnet != nullptr && (vnet->gsoType & ~kGsoEcn) != kGsoNone) {
    ExpandResult r = segment(frame, len, tag, shift, *vnet, sink, written);
    *segmented = r == ExpandResult::Ok;
    *csumFixed = *segmented;
    return r;
  }
  if (sink.room < 1) return ExpandResult::NoRoom;
  const uint32_t outLen = len + shift;
  if (outLen > sink.maxFrame) return ExpandResult::TooBig;
  uint8_t* d = slotAt(sink, 0);
  if (d == nullptr) return ExpandResult::Malformed;
  copyWithTag(d, frame, len, tag, shift);
  if (vnet != nullptr && (vnet->flags & kNeedsCsum)) {
    if (!completeChecksum(d, outLen, vnet->csumStart + shift, vnet->csumOffset)) return ExpandResult::Malformed;
    *csumFixed = true;
  }
  sink.lens[sink.from] = uint16_t(outLen);
  *written = 1;
  return ExpandResult::Ok;
}

bool partialChecksum(const uint8_t* frame, uint32_t len, VnetInfo* vnet) {
  uint32_t l3, et;
  if (!findL3(frame, len, &l3, &et)) return false;
  uint32_t l4, end;
  uint8_t proto;
  if (et == kEthIp4) {
    if (l3 + 20 > len || (frame[l3] >> 4) != 4) return false;
    if ((rd16(frame + l3 + 6) & 0x3fff) != 0) return false;  // a fragment: no L4 checksum to finish
    l4 = l3 + (frame[l3] & 0xf) * 4u;
    end = l3 + rd16(frame + l3 + 2);
    proto = frame[l3 + 9];
  } else if (et == kEthIp6) {
    if (l3 + 40 > len || (frame[l3] >> 4) != 6) return false;
    l4 = l3 + 40;
    end = l4 + rd16(frame + l3 + 4);
    proto = frame[l3 + 6];
  } else {
    return false;
  }
  const uint32_t at = proto == kProtoTcp ? 16 : proto == kProtoUdp ? 6 : 0;
  if (at == 0 || end != len || l4 + at + 2 > len) return false;
  const uint32_t field = rd16(frame + l4 + at);
  if (field == 0 && proto == kProtoUdp) return false;  // IPv4 UDP without a checksum
  uint64_t acc = pseudoSum(frame, l3, et == kEthIp4, proto, len - l4);
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  if (field != acc) return false;
  *vnet = VnetInfo{kNeedsCsum, kGsoNone, 0, uint16_t(l4), uint16_t(at)};
  return true;
}

bool completePartial(uint8_t* frame, uint32_t len) {
  VnetInfo vnet;
  return partialChecksum(frame, len, &vnet) && completeChecksum(frame, len, vnet.csumStart, vnet.csumOffset);
}

bool fitsMtu(const uint8_t* frame, uint32_t len, uint32_t mtu) {
  uint32_t limit = 14 + mtu;
  uint32_t off = 12;
  for (int tags = 0; tags < 2 && off + 2 <= len; tags++, off += 4) {
    uint32_t et = rd16(frame + off);
    if (et != kEthVlan && et != kEthQinq) break;
    limit += 4;
  }
  return len <= limit;
}

}  // namespace sfc
