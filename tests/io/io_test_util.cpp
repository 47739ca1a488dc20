// Byte-level builders for the io tests (see io_test_util.h). The zip writer follows APPNOTE 6.3 the
// way torch.save's miniz does: stored entries, local extra field padding the data to 64 bytes, and
// zip64 records when asked or when an offset needs them.
#include "io/io_test_util.h"

#include <algorithm>
#include <cstring>

#include "io/zip_archive.h"

namespace xc2::iotest {
namespace {

void put16(std::string& s, uint16_t v) {
  for (int k = 0; k < 2; ++k) s.push_back(static_cast<char>(v >> (8 * k)));
}
void put32(std::string& s, uint32_t v) {
  for (int k = 0; k < 4; ++k) s.push_back(static_cast<char>(v >> (8 * k)));
}
void put64(std::string& s, uint64_t v) {
  for (int k = 0; k < 8; ++k) s.push_back(static_cast<char>(v >> (8 * k)));
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o.push_back('\\');
    o.push_back(c);
  }
  return o;
}

}  // namespace

std::string pattern_bytes(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i + seed) % 251);
  return s;
}

std::string make_safetensors_raw(const std::string& header_json, const std::string& data) {
  std::string out;
  put64(out, header_json.size());
  return out + header_json + data;
}

std::string make_safetensors(const std::vector<StTensor>& tensors) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string data;
  for (const StTensor& t : tensors) {
    header += ",\"" + json_escape(t.name) + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + t.bytes.size()) + "]}";
    data += t.bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  return make_safetensors_raw(header, data);
}

ZipChunks make_zip_chunks(const std::vector<ZipItem>& items, const ZipOptions& options) {
  ZipChunks z;
  std::string cur;          // bytes of the chunk being built
  uint64_t cur_start = 0;   // its offset
  auto pos = [&] { return cur_start + cur.size(); };
  auto jump_to = [&](uint64_t off) {
    if (off <= pos()) return;
    if (!cur.empty()) z.chunks.emplace_back(cur_start, cur);
    cur.clear();
    cur_start = off;
  };

  struct Written { uint64_t offset; uint32_t crc; };
  std::vector<Written> written;
  bool need_zip64 = options.zip64_end;
  for (const ZipItem& it : items) {
    jump_to(it.min_offset);
    const uint64_t off = pos();
    if (off >= 0xFFFFFFFFu) need_zip64 = true;
    const uint32_t crc = io::crc32(reinterpret_cast<const uint8_t*>(it.data.data()), it.data.size()) ^ it.crc_xor;
    written.push_back({off, crc});
    std::string extra;
    if (it.force_zip64) {
      put16(extra, 0x0001);
      put16(extra, 16);
      put64(extra, it.data.size());
      put64(extra, it.data.size());
    }
    // Pad with an unknown extra field ("FB", as torch does) so the data lands on an aligned offset.
    const uint64_t base = off + 30 + it.name.size() + extra.size();
    if (options.align > 1) {
      uint64_t pad = (options.align - (base + 4) % options.align) % options.align;
      put16(extra, 0x4246);
      put16(extra, static_cast<uint16_t>(pad));
      extra.append(pad, 'Z');
    }
    std::string h;
    put32(h, 0x04034b50);
    put16(h, it.force_zip64 ? 45 : 20);
    put16(h, 0);
    put16(h, it.method);
    put16(h, 0);
    put16(h, 0x21);
    put32(h, crc);
    put32(h, it.force_zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(it.data.size()));
    put32(h, it.force_zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(it.data.size()));
    put16(h, static_cast<uint16_t>(it.name.size()));
    put16(h, static_cast<uint16_t>(extra.size()));
    cur += h + it.name + extra + it.data;
  }

  const uint64_t cd_offset = pos();
  std::string cd;
  for (size_t i = 0; i < items.size(); ++i) {
    const ZipItem& it = items[i];
    const bool z64 = it.force_zip64 || written[i].offset >= 0xFFFFFFFFu;
    std::string extra;
    if (z64) {
      put16(extra, 0x0001);
      put16(extra, 24);
      put64(extra, it.data.size());
      put64(extra, it.data.size());
      put64(extra, written[i].offset);
    }
    put32(cd, 0x02014b50);
    put16(cd, 45);
    put16(cd, z64 ? 45 : 20);
    put16(cd, 0);
    put16(cd, it.method);
    put16(cd, 0);
    put16(cd, 0x21);
    put32(cd, written[i].crc);
    put32(cd, z64 ? 0xFFFFFFFFu : static_cast<uint32_t>(it.data.size()));
    put32(cd, z64 ? 0xFFFFFFFFu : static_cast<uint32_t>(it.data.size()));
    put16(cd, static_cast<uint16_t>(it.name.size()));
    put16(cd, static_cast<uint16_t>(extra.size()));
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, z64 ? 0xFFFFFFFFu : static_cast<uint32_t>(written[i].offset));
    cd += it.name + extra;
  }
  cur += cd;
  if (cd_offset >= 0xFFFFFFFFu) need_zip64 = true;

  if (need_zip64) {
    const uint64_t z64_offset = pos();
    std::string r;
    put32(r, 0x06064b50);
    put64(r, 44);
    put16(r, 45);
    put16(r, 45);
    put32(r, 0);
    put32(r, 0);
    put64(r, items.size());
    put64(r, items.size());
    put64(r, cd.size());
    put64(r, cd_offset);
    put32(r, 0x07064b50);
    put32(r, 0);
    put64(r, z64_offset);
    put32(r, 1);
    cur += r;
  }
  std::string e;
  put32(e, 0x06054b50);
  put16(e, 0);
  put16(e, 0);
  put16(e, need_zip64 ? 0xFFFF : static_cast<uint16_t>(items.size()));
  put16(e, need_zip64 ? 0xFFFF : static_cast<uint16_t>(items.size()));
  put32(e, need_zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd.size()));
  put32(e, need_zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_offset));
  put16(e, static_cast<uint16_t>(options.comment.size()));
  cur += e + options.comment;
  z.chunks.emplace_back(cur_start, cur);
  z.size = pos();
  return z;
}

std::string make_zip(const std::vector<ZipItem>& items, const ZipOptions& options) {
  const ZipChunks z = make_zip_chunks(items, options);
  std::string out(static_cast<size_t>(z.size), '\0');
  for (const auto& c : z.chunks) std::memcpy(&out[static_cast<size_t>(c.first)], c.second.data(), c.second.size());
  return out;
}

Pickler& Pickler::proto(int p) {
  out_.push_back(static_cast<char>(0x80));
  out_.push_back(static_cast<char>(p));
  return *this;
}

Pickler& Pickler::op(uint8_t opcode) {
  out_.push_back(static_cast<char>(opcode));
  return *this;
}

Pickler& Pickler::raw(const std::string& bytes) {
  out_ += bytes;
  return *this;
}

Pickler& Pickler::global(const std::string& module, const std::string& name) {
  out_ += "c" + module + "\n" + name + "\n";
  return *this;
}

Pickler& Pickler::str(const std::string& s) {
  out_.push_back('X');
  put32(out_, static_cast<uint32_t>(s.size()));
  out_ += s;
  return *this;
}

Pickler& Pickler::integer(int64_t v) {
  if (v >= 0 && v < 256) {
    out_.push_back('K');
    out_.push_back(static_cast<char>(v));
  } else if (v >= 0 && v < 65536) {
    out_.push_back('M');
    put16(out_, static_cast<uint16_t>(v));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    out_.push_back('J');
    put32(out_, static_cast<uint32_t>(static_cast<int32_t>(v)));
  } else {
    out_.push_back(static_cast<char>(0x8a));
    out_.push_back(8);
    put64(out_, static_cast<uint64_t>(v));
  }
  return *this;
}

Pickler& Pickler::tuple_of(const std::vector<int64_t>& v) {
  mark();
  for (int64_t x : v) integer(x);
  return op('t');
}

Pickler& Pickler::ordered_dict() { return global("collections", "OrderedDict").empty_tuple().op('R'); }

Pickler& Pickler::storage(const std::string& type, const std::string& key, int64_t numel) {
  mark().str("storage").global("torch", type).str(key).str("cpu").integer(numel).op('t');
  return op('Q');
}

std::string make_state_dict_pickle(const std::vector<BinTensor>& tensors) {
  Pickler p;
  p.proto(2).ordered_dict().mark();
  for (const BinTensor& t : tensors) {
    std::vector<int64_t> stride = t.stride;
    if (stride.empty()) {
      stride.assign(t.shape.size(), 1);
      for (size_t d = t.shape.size(); d-- > 1;) stride[d - 1] = stride[d] * t.shape[d];
    }
    p.str(t.name).global("torch._utils", "_rebuild_tensor_v2").mark();
    p.storage(t.storage_type, t.key, t.storage_numel).integer(t.offset).tuple_of(t.shape).tuple_of(stride);
    p.op(0x89).ordered_dict().op('t').op('R');
  }
  p.op('u').stop();
  return p.bytes();
}

std::vector<ZipItem> make_torch_bin_items(const std::string& pickle, const std::map<std::string, std::string>& storages,
                                          const std::string& prefix) {
  std::vector<ZipItem> items;
  items.push_back({prefix + "/data.pkl", pickle});
  for (const auto& kv : storages) items.push_back({prefix + "/data/" + kv.first, kv.second});
  items.push_back({prefix + "/version", "3\n"});
  return items;
}

std::string make_torch_bin(const std::vector<BinTensor>& tensors, const std::map<std::string, std::string>& storages,
                           const std::string& prefix) {
  return make_zip(make_torch_bin_items(make_state_dict_pickle(tensors), storages, prefix));
}

void expect_same_checkpoint(const io::Checkpoint& a, const io::Checkpoint& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const io::TensorView& t : a.tensors()) {
    SCOPED_TRACE(t.name);
    const io::TensorView* u = b.find(t.name);
    ASSERT_NE(u, nullptr);
    EXPECT_EQ(t.dtype, u->dtype);
    EXPECT_EQ(t.shape, u->shape);
    ASSERT_EQ(t.nbytes, u->nbytes);
    EXPECT_EQ(std::memcmp(t.data, u->data, t.nbytes), 0);
  }
  EXPECT_EQ(a.total_bytes(), b.total_bytes());
}

}  // namespace xc2::iotest
