// Zip archive index (PKWARE APPNOTE 6.3): EOCD found by scanning back over the last 64 KiB + 22
// bytes, zip64 EOCD locator/record and zip64 extra fields (0x0001) for sizes and offsets >= 4 GiB,
// central directory entries, then each local header to locate the data. Everything is bounds-checked:
//   local header + data  <=  central directory  <=  (zip64) EOCD  <=  file size.
#include "io/zip_archive.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "core/check.h"
#include "io/bytes.h"

namespace xc2::io {
namespace {

using detail::rd_u16;
using detail::rd_u32;
using detail::rd_u64;

constexpr uint32_t kSigLocal = 0x04034b50;
constexpr uint32_t kSigCentral = 0x02014b50;
constexpr uint32_t kSigEocd = 0x06054b50;
constexpr uint32_t kSigZip64Eocd = 0x06064b50;
constexpr uint32_t kSigZip64Locator = 0x07064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;

// offset + len <= limit, without overflow.
bool fits(uint64_t offset, uint64_t len, uint64_t limit) { return offset <= limit && len <= limit - offset; }

}  // namespace

uint32_t crc32(const uint8_t* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

ZipArchive ZipArchive::parse(const uint8_t* data, size_t size, const std::string& file_name) {
  const std::string where = "'" + file_name + "'";
  ZipArchive z;
  z.base_ = data;
  z.size_ = size;
  z.file_name_ = file_name;

  // 1. End-of-central-directory record: the last signature whose comment ends exactly at EOF.
  if (size < kEocdSize) XC2_THROW(Io, where, ": not a zip archive (", size, " bytes, truncated?)");
  const size_t lowest = size - kEocdSize > 65535 ? size - kEocdSize - 65535 : 0;
  size_t eocd = SIZE_MAX;
  for (size_t pos = size - kEocdSize + 1; pos-- > lowest;) {
    if (rd_u32(data + pos) == kSigEocd && pos + kEocdSize + rd_u16(data + pos + 20) == size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == SIZE_MAX) {
    XC2_THROW(Io, where, ": no zip end-of-central-directory record (truncated, or not a zip archive)");
  }
  const uint8_t* e = data + eocd;
  uint64_t disk = rd_u16(e + 4), cd_disk = rd_u16(e + 6);
  uint64_t n_entries_disk = rd_u16(e + 8), n_entries = rd_u16(e + 10);
  uint64_t cd_size = rd_u32(e + 12), cd_offset = rd_u32(e + 16);
  uint64_t cd_limit = eocd;  // the central directory ends before this offset

  // 2. zip64: a locator right before the EOCD points at the zip64 EOCD record.
  if (eocd >= kZip64LocatorSize && rd_u32(data + eocd - kZip64LocatorSize) == kSigZip64Locator) {
    const uint8_t* loc = data + eocd - kZip64LocatorSize;
    const uint32_t z64_disk = rd_u32(loc + 4);
    const uint64_t z64_offset = rd_u64(loc + 8);
    const uint32_t total_disks = rd_u32(loc + 16);
    if (z64_disk != 0 || total_disks > 1) XC2_THROW(Unsupported, where, ": multi-disk zip archives are not supported");
    if (!fits(z64_offset, kZip64EocdSize, eocd - kZip64LocatorSize)) {
      XC2_THROW(Io, where, ": zip64 end-of-central-directory offset ", z64_offset, " is out of range");
    }
    const uint8_t* r = data + z64_offset;
    if (rd_u32(r) != kSigZip64Eocd) XC2_THROW(Io, where, ": bad zip64 end-of-central-directory signature");
    if (rd_u64(r + 4) < kZip64EocdSize - 12) XC2_THROW(Io, where, ": zip64 end-of-central-directory record too short");
    disk = rd_u32(r + 16);
    cd_disk = rd_u32(r + 20);
    n_entries_disk = rd_u64(r + 24);
    n_entries = rd_u64(r + 32);
    cd_size = rd_u64(r + 40);
    cd_offset = rd_u64(r + 48);
    cd_limit = z64_offset;
  } else if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    XC2_THROW(Io, where, ": zip end-of-central-directory needs zip64 values, but there is no zip64 locator");
  }
  if (disk != 0 || cd_disk != 0 || n_entries_disk != n_entries) {
    XC2_THROW(Unsupported, where, ": multi-disk zip archives are not supported");
  }
  if (!fits(cd_offset, cd_size, cd_limit)) {
    XC2_THROW(Io, where, ": zip central directory [", cd_offset, ", +", cd_size, ") lies outside the archive (",
              cd_limit, " bytes before the end records)");
  }
  if (n_entries > cd_size / kCentralSize) {
    XC2_THROW(Io, where, ": zip central directory of ", cd_size, " bytes cannot hold ", n_entries, " entries");
  }

  // 3. Central directory entries and their local headers.
  const uint64_t cd_end = cd_offset + cd_size;
  z.entries_.reserve(static_cast<size_t>(n_entries));
  uint64_t p = cd_offset;
  for (uint64_t i = 0; i < n_entries; ++i) {
    if (!fits(p, kCentralSize, cd_end) || rd_u32(data + p) != kSigCentral) {
      XC2_THROW(Io, where, ": zip central directory entry ", i, " is corrupt or truncated");
    }
    const uint8_t* c = data + p;
    ZipEntry ent;
    ent.flags = rd_u16(c + 8);
    ent.method = rd_u16(c + 10);
    ent.crc32 = rd_u32(c + 16);
    ent.compressed_size = rd_u32(c + 20);
    ent.size = rd_u32(c + 24);
    const uint16_t name_len = rd_u16(c + 28), extra_len = rd_u16(c + 30), comment_len = rd_u16(c + 32);
    uint64_t disk_start = rd_u16(c + 34);
    ent.local_offset = rd_u32(c + 42);
    const uint64_t var_len = uint64_t{name_len} + extra_len + comment_len;
    if (!fits(p + kCentralSize, var_len, cd_end)) {
      XC2_THROW(Io, where, ": zip central directory entry ", i, " overruns the central directory");
    }
    ent.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);

    // zip64 extended information: only the fields whose 32/16-bit value is saturated, in this order.
    const bool need_size = ent.size == 0xFFFFFFFFu, need_csize = ent.compressed_size == 0xFFFFFFFFu;
    const bool need_offset = ent.local_offset == 0xFFFFFFFFu, need_disk = disk_start == 0xFFFF;
    if (need_size || need_csize || need_offset || need_disk) {
      const uint8_t* x = c + kCentralSize + name_len;
      const uint8_t* x_end = x + extra_len;
      bool found = false;
      while (x_end - x >= 4) {
        const uint16_t id = rd_u16(x), len = rd_u16(x + 2);
        if (len > x_end - x - 4) break;
        if (id == 0x0001) {
          const uint8_t* f = x + 4;
          const uint8_t* f_end = f + len;
          auto take64 = [&](uint64_t* v) {
            if (f_end - f < 8) XC2_THROW(Io, where, ": zip64 extra field of '", ent.name, "' is too short");
            *v = rd_u64(f);
            f += 8;
          };
          if (need_size) take64(&ent.size);
          if (need_csize) take64(&ent.compressed_size);
          if (need_offset) take64(&ent.local_offset);
          if (need_disk) {
            if (f_end - f < 4) XC2_THROW(Io, where, ": zip64 extra field of '", ent.name, "' is too short");
            disk_start = rd_u32(f);
          }
          found = true;
          break;
        }
        x += 4 + len;
      }
      if (!found) XC2_THROW(Io, where, ": zip entry '", ent.name, "' needs a zip64 extra field, but has none");
    }
    if (disk_start != 0) XC2_THROW(Unsupported, where, ": multi-disk zip archives are not supported");

    // Local header: fixed part, then the same name, then its own extra field (torch pads with it).
    if (!fits(ent.local_offset, kLocalSize, cd_offset) || rd_u32(data + ent.local_offset) != kSigLocal) {
      XC2_THROW(Io, where, ": zip local header of '", ent.name, "' at offset ", ent.local_offset,
                " is missing or out of range");
    }
    const uint8_t* l = data + ent.local_offset;
    const uint16_t lname_len = rd_u16(l + 26), lextra_len = rd_u16(l + 28);
    ent.data_offset = ent.local_offset + kLocalSize + lname_len + lextra_len;
    if (ent.data_offset > cd_offset) {
      XC2_THROW(Io, where, ": zip local header of '", ent.name, "' overruns the central directory");
    }
    if (lname_len != name_len || std::memcmp(l + kLocalSize, c + kCentralSize, name_len) != 0) {
      XC2_THROW(Io, where, ": zip local header name does not match central directory entry '", ent.name, "'");
    }
    if (!fits(ent.data_offset, ent.compressed_size, cd_offset)) {
      XC2_THROW(Io, where, ": zip entry '", ent.name, "' data [", ent.data_offset, ", +", ent.compressed_size,
                ") runs past the central directory at ", cd_offset, " (truncated?)");
    }
    if (!z.by_name_.emplace(ent.name, z.entries_.size()).second) {
      XC2_THROW(Io, where, ": duplicate zip entry '", ent.name, "'");
    }
    z.entries_.push_back(std::move(ent));
    p += kCentralSize + var_len;
  }
  return z;
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipArchive::data(const ZipEntry& entry, bool verify_crc) const {
  const std::string where = "'" + file_name_ + "'";
  if (entry.flags & 1u) XC2_THROW(Unsupported, where, ": zip entry '", entry.name, "' is encrypted");
  if (entry.method != 0) {
    XC2_THROW(Unsupported, where, ": zip entry '", entry.name, "' uses compression method ", entry.method,
              "; only stored (method 0) entries are supported, as torch.save writes them");
  }
  if (entry.compressed_size != entry.size) {
    XC2_THROW(Io, where, ": stored zip entry '", entry.name, "' has compressed size ", entry.compressed_size,
              " != size ", entry.size);
  }
  XC2_ASSERT(fits(entry.data_offset, entry.size, size_));
  const uint8_t* p = base_ + entry.data_offset;
  if (verify_crc && crc32(p, static_cast<size_t>(entry.size)) != entry.crc32) {
    XC2_THROW(Io, where, ": zip entry '", entry.name, "' fails its CRC-32 check (corrupt file)");
  }
  return p;
}

}  // namespace xc2::io
