// Read-only index of a zip archive held in memory (a mapped torch.save file), zip64 included.
// Only what torch.save writes is accepted when an entry is read: stored (method 0), unencrypted,
// single disk. Every offset and size is checked against the buffer before use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace xc2::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;        // 0 = stored; anything else is rejected by ZipArchive::data()
  uint16_t flags = 0;         // general purpose bits (bit 0 = encrypted)
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;          // uncompressed size
  uint64_t local_offset = 0;  // local file header
  uint64_t data_offset = 0;   // first byte of the data: local header + 30 + name + extra
};

class ZipArchive {
 public:
  // Parses the end-of-central-directory record (zip64 when present), the central directory and
  // every local header. file_name is used in messages. Throws Error{Io} on corrupt or truncated
  // input, Error{Unsupported} for multi-disk archives.
  static ZipArchive parse(const uint8_t* data, size_t size, const std::string& file_name);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;  // nullptr if absent
  // Pointer to a stored entry's bytes; Error{Unsupported} if compressed or encrypted.
  // verify_crc: check the CRC-32 too (for small entries such as data.pkl).
  const uint8_t* data(const ZipEntry& entry, bool verify_crc = false) const;
  const std::string& file_name() const { return file_name_; }

 private:
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::string file_name_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

uint32_t crc32(const uint8_t* data, size_t n);

}  // namespace xc2::io
