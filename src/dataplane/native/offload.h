/*
 * offload: turn what a packet socket hands us into frames a wire would carry.
 *
 * veth and TAP peers offload work to the receiver: the kernel may deliver a TCP "super-frame" of up
 * to 64 KiB (GSO) with a partial checksum (CHECKSUM_PARTIAL: only the pseudo-header sum is in the
 * checksum field), and it strips the outer 802.1Q tag into metadata. A forwarder that copied such
 * frames verbatim would emit frames larger than the egress MTU with wrong checksums. With
 * PACKET_VNET_HDR the kernel describes both (a virtio_net_hdr before each frame), and this module
 * rebuilds wire frames while copying them into batch slots:
 *
 *   - the stripped VLAN tag is put back after the MAC addresses;
 *   - a partial checksum is completed (Internet checksum, or CRC32c for SCTP);
 *   - a GSO frame (TCPv4, TCPv6, UDP L4) is cut into gso_size segments, each with its own IP
 *     length/id, TCP sequence number and flags, and full checksums.
 *
 * Pure functions over byte buffers: no syscalls, no allocation, bounded by the caller's slots.
 */
#pragma once

#include <cstddef>
#include <cstdint>

namespace sfc {

/**
 * struct virtio_net_hdr as packet sockets read and write it (host byte order on little-endian
 * hosts). Declared here because linux/virtio_net.h does not compile as C++.
 */
struct VirtioNetHdr {
  uint8_t flags;
  uint8_t gsoType;
  uint16_t hdrLen;
  uint16_t gsoSize;
  uint16_t csumStart;
  uint16_t csumOffset;
};
static_assert(sizeof(VirtioNetHdr) == 10, "virtio_net_hdr is 10 bytes");

/** The fields of the header that describe offloads. */
struct VnetInfo {
  uint8_t flags;
  uint8_t gsoType;
  uint16_t gsoSize;
  uint16_t csumStart;
  uint16_t csumOffset;
};

/** An outer VLAN tag the kernel moved into metadata (present = false when none). */
struct VlanTag {
  bool present;
  uint16_t tpid;
  uint16_t tci;
};

/** Where expanded frames go: consecutive batch slots starts[from..from+room). */
struct SlotSink {
  uint8_t* arena;
  size_t arenaLen;
  const int32_t* starts;
  uint16_t* lens;
  uint32_t from;
  uint32_t room;
  uint32_t maxFrame;
};

enum class ExpandResult {
  Ok,
  NoRoom,     // needs more slots than `room`: leave the frame for the next burst
  TooBig,     // a (segment) frame exceeds maxFrame, or the frame was truncated by the ring
  Malformed,  // offsets/headers inconsistent with the GSO/checksum metadata
};

/**
 * Copy one received frame into the sink, repairing offloads as described above. On Ok, *written
 * is the number of slots filled (1, or the segment count of a GSO frame) and *segmented tells
 * whether the frame was cut up, *csumFixed whether a checksum was completed.
 */
ExpandResult expandFrame(const uint8_t* frame, uint32_t len, const VlanTag& tag, const VnetInfo* vnet,
                         const SlotSink& sink, uint32_t* written, bool* segmented, bool* csumFixed);

/**
 * For a frame that came without offload metadata (the XDP path): true when it is an unfragmented
 * IPv4 or IPv6 TCP/UDP segment, not padded, whose checksum field holds exactly the pseudo-header
 * sum that a sender with checksum offload leaves there (CHECKSUM_PARTIAL); *vnet then describes
 * the completion for expandFrame. Completing a checksum that was already valid and equal to that
 * sum rewrites the same value, so a false match never alters a frame.
 */
bool partialChecksum(const uint8_t* frame, uint32_t len, VnetInfo* vnet);

/** The same repair in place, for a frame that stays where it was received; true when it completed one. */
bool completePartial(uint8_t* frame, uint32_t len);

/** True when `len` fits the MTU for this frame (one extra 4 bytes per leading VLAN tag). */
bool fitsMtu(const uint8_t* frame, uint32_t len, uint32_t mtu);

}  // namespace sfc
