// Builders for the io tests: safetensors files, stored zip archives (zip64 optional), pickle programs
// and whole torch.save-style .bin files, all as byte strings, so each test can make exactly the valid
// or hostile input it needs without Python.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "xc2/error.h"

// Runs stmt and expects an xc2::Error with the given code whose message contains substr.
#define EXPECT_XC2_ERROR(stmt, ecode, substr)                                                             \
  do {                                                                                                    \
    try {                                                                                                 \
      stmt;                                                                                               \
      ADD_FAILURE() << "expected xc2::Error from: " #stmt;                                                \
    } catch (const ::xc2::Error& xc2_e_) {                                                                \
      EXPECT_STREQ(::xc2::error_code_name(xc2_e_.code()), ::xc2::error_code_name(::xc2::ErrorCode::ecode)) \
          << xc2_e_.what();                                                                               \
      EXPECT_NE(std::string(xc2_e_.what()).find(substr), std::string::npos)                               \
          << "message: " << xc2_e_.what() << "\nexpected to contain: " << (substr);                        \
    }                                                                                                     \
  } while (0)

namespace xc2::iotest {

// Message of the xc2::Error thrown by fn ("" if none); other exception types propagate.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ::xc2::Error& e) {
    return e.what();
  }
  return "";
}

// ---- safetensors
struct StTensor {
  std::string name;
  std::string dtype;            // "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;
  std::string bytes;            // raw little-endian data
};
// A valid file: header {"__metadata__": {"format": "pt"}, ...} padded to 8, tensors back to back.
std::string make_safetensors(const std::vector<StTensor>& tensors);
// [u64 LE header_json.size()][header_json][data]
std::string make_safetensors_raw(const std::string& header_json, const std::string& data);
// n bytes 0, 1, 2, ... (mod 251)
std::string pattern_bytes(size_t n, uint8_t seed = 0);

// ---- zip
struct ZipItem {
  ZipItem(std::string n, std::string d) : name(std::move(n)), data(std::move(d)) {}
  std::string name;
  std::string data;
  uint16_t method = 0;        // written as is (the data is never compressed)
  bool force_zip64 = false;   // saturate sizes/offset and put the values in zip64 extra fields
  uint64_t min_offset = 0;    // place the local header at or after this offset (sparse files)
  uint32_t crc_xor = 0;       // corrupt the stored CRC-32
};
struct ZipOptions {
  bool zip64_end = false;     // write a zip64 EOCD record + locator (forced when offsets need it)
  size_t align = 64;          // pad local extra fields so data starts at a multiple of this (torch: 64)
  std::string comment;
};
// The archive as (offset, bytes) chunks; gaps between chunks are zeros. size = end of the last chunk.
struct ZipChunks {
  std::vector<std::pair<uint64_t, std::string>> chunks;
  uint64_t size = 0;
};
ZipChunks make_zip_chunks(const std::vector<ZipItem>& items, const ZipOptions& options = {});
std::string make_zip(const std::vector<ZipItem>& items, const ZipOptions& options = {});

// ---- pickle
class Pickler {
 public:
  Pickler& proto(int p = 2);
  Pickler& op(uint8_t opcode);                  // a bare opcode
  Pickler& raw(const std::string& bytes);
  Pickler& mark() { return op('('); }
  Pickler& stop() { return op('.'); }
  Pickler& global(const std::string& module, const std::string& name);
  Pickler& str(const std::string& s);           // BINUNICODE
  Pickler& integer(int64_t v);                  // BININT1/BININT2/BININT/LONG1
  Pickler& tuple_of(const std::vector<int64_t>& v);
  Pickler& empty_dict() { return op('}'); }
  Pickler& empty_list() { return op(']'); }
  Pickler& empty_tuple() { return op(')'); }
  Pickler& ordered_dict();                      // OrderedDict() via GLOBAL + EMPTY_TUPLE + REDUCE
  Pickler& storage(const std::string& type, const std::string& key, int64_t numel);  // persistent id + BINPERSID
  Pickler& binput(uint8_t i) { op('q'); return raw(std::string(1, static_cast<char>(i))); }
  Pickler& binget(uint8_t i) { op('h'); return raw(std::string(1, static_cast<char>(i))); }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

struct BinTensor {
  BinTensor(std::string n, std::string type, std::string k, int64_t numel, int64_t off, std::vector<int64_t> sh,
            std::vector<int64_t> st = {})
      : name(std::move(n)), storage_type(std::move(type)), key(std::move(k)), storage_numel(numel), offset(off),
        shape(std::move(sh)), stride(std::move(st)) {}
  std::string name;
  std::string storage_type = "FloatStorage";
  std::string key;                 // storage key: archive entry <prefix>/data/<key>
  int64_t storage_numel = 0;
  int64_t offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;     // empty: contiguous
};
// PROTO 2, OrderedDict of name -> _rebuild_tensor_v2(...), STOP (what torch.save writes).
std::string make_state_dict_pickle(const std::vector<BinTensor>& tensors);
// A torch.save-style archive: <prefix>/data.pkl, <prefix>/data/<key> for each storage, <prefix>/version.
std::vector<ZipItem> make_torch_bin_items(const std::string& pickle, const std::map<std::string, std::string>& storages,
                                          const std::string& prefix = "archive");
std::string make_torch_bin(const std::vector<BinTensor>& tensors, const std::map<std::string, std::string>& storages,
                           const std::string& prefix = "archive");

// The same set of names; each tensor with the same dtype, shape and bytes.
void expect_same_checkpoint(const io::Checkpoint& a, const io::Checkpoint& b);

}  // namespace xc2::iotest
