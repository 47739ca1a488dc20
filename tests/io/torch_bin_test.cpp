// PyTorch .bin reader. Oracles: real torch.save files (tests/data/io, made by make_fixtures.py with
// torch 1.13) against the same tensors written as safetensors by an independent writer, and archives
// built here byte by byte for the hostile cases.
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/mmap_file.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

using iotest::BinTensor;
using iotest::make_torch_bin;
using iotest::make_zip;
using iotest::pattern_bytes;
using iotest::Pickler;
using iotest::ZipItem;

std::vector<TensorView> parse_bin(const std::string& bytes, std::vector<uint8_t>* keep, const PickleLimits& limits = {}) {
  keep->assign(bytes.begin(), bytes.end());  // exact size, for ASan; views point into *keep
  return parse_torch_bin(keep->data(), keep->size(), "t.bin", limits);
}

void parse_bin(const std::string& bytes) {
  std::vector<uint8_t> keep;
  parse_bin(bytes, &keep);
}

std::string fixture(const std::string& name) { return test::data_path("io/" + name); }

// Same names in the same order, same dtypes, shapes and bytes.
void expect_same_tensors(const std::vector<TensorView>& got, const std::vector<TensorView>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    SCOPED_TRACE(want[k].name);
    EXPECT_EQ(got[k].name, want[k].name);
    EXPECT_EQ(got[k].dtype, want[k].dtype);
    EXPECT_EQ(got[k].shape, want[k].shape);
    ASSERT_EQ(got[k].nbytes, want[k].nbytes);
    if (got[k].nbytes > 0) {
      EXPECT_EQ(std::memcmp(got[k].data, want[k].data, got[k].nbytes), 0);
    }
  }
}

TEST(TorchBin, FixturesMatchSafetensors) {
  const LoadedFile ref = load_safetensors(fixture("state.safetensors"));
  ASSERT_EQ(ref.tensors.size(), 11u);
  for (const char* name : {"state_p2.bin", "state_p4.bin", "state_archive.bin"}) {
    SCOPED_TRACE(name);
    const LoadedFile f = load_torch_bin(fixture(name));
    expect_same_tensors(f.tensors, ref.tensors);
    for (const TensorView& v : f.tensors) EXPECT_EQ(v.file, name);
  }
}

TEST(TorchBin, FixtureValuesAndSharedStorage) {
  const Checkpoint ck = Checkpoint::open_file(fixture("state_p2.bin"));
  EXPECT_EQ(ck.format(), CheckpointFormat::TorchBin);
  const TensorView* w = ck.find("linear.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::F32);
  EXPECT_EQ(w->shape_str(), "[3, 4]");
  float w0;
  std::memcpy(&w0, w->data, 4);
  EXPECT_EQ(w0, -2.0f);
  const TensorView* base = ck.find("bf.base");
  const TensorView* tail = ck.find("bf.view_tail");
  const TensorView* v2d = ck.find("bf.view_2d");
  ASSERT_TRUE(base && tail && v2d);
  EXPECT_EQ(base->dtype, DType::BF16);
  EXPECT_EQ(static_cast<const uint8_t*>(tail->data), static_cast<const uint8_t*>(base->data) + 8);  // offset 4
  EXPECT_EQ(v2d->data, base->data);
  EXPECT_EQ(v2d->shape_str(), "[2, 3]");
  uint16_t t0;
  std::memcpy(&t0, tail->data, 2);
  EXPECT_EQ(t0, 0x4080);  // bf16(4.0)
  EXPECT_EQ(ck.find("scalar")->shape.size(), 0u);
  EXPECT_EQ(ck.find("empty")->nbytes, 0u);
  EXPECT_EQ(ck.find("empty")->shape_str(), "[0, 4]");
  EXPECT_EQ(ck.find("param")->shape_str(), "[2, 2]");
  EXPECT_EQ(ck.find("unit_stride")->shape_str(), "[1, 3]");
  EXPECT_EQ(ck.find("_metadata"), nullptr);
}

TEST(TorchBin, FixtureErrors) {
  EXPECT_XC2_ERROR(load_torch_bin(fixture("noncontig.bin")), Unsupported,
                   "'noncontig.bin': tensor 'w' is non-contiguous (shape [3, 2], stride [1, 3])");
  EXPECT_XC2_ERROR(load_torch_bin(fixture("double.bin")), Unsupported,
                   "'double.bin': tensor 'd' is stored as torch.DoubleStorage");
  EXPECT_XC2_ERROR(load_torch_bin(fixture("long.bin")), Unsupported, "tensor 'ids' is stored as torch.LongStorage");
  EXPECT_XC2_ERROR(load_torch_bin(fixture("legacy.bin")), Unsupported, "legacy (pre-1.6, non-zip) torch.save format");
  EXPECT_XC2_ERROR(Checkpoint::open_file(fixture("legacy.bin")), Unsupported, "legacy");
  EXPECT_XC2_ERROR(load_torch_bin(fixture("nested.bin")), Io, "no tensors at its top level (first entry 'state_dict'");
  EXPECT_XC2_ERROR(load_torch_bin(fixture("list.bin")), Io, "the pickled object is a list, expected a dict");
}

TEST(TorchBin, BuiltArchive) {
  const std::string s0 = pattern_bytes(48, 1), s1 = pattern_bytes(6, 2);
  const std::string file = make_torch_bin(
      {{"a", "FloatStorage", "0", 12, 0, {3, 4}},
       {"b", "FloatStorage", "0", 12, 8, {2, 2}},          // shares storage 0 from element 8
       {"c", "HalfStorage", "k1", 3, 1, {2}},
       {"d", "BFloat16Storage", "k2", 0, 0, {0}},          // empty storage
       {"e", "FloatStorage", "0", 12, 0, {1, 4}, {99, 1}}, // size-1 dim with any stride is contiguous
       {"f", "FloatStorage", "0", 12, 500, {0, 3}, {7, 7}}},  // empty tensor: offset and strides don't matter
      {{"0", s0}, {"k1", s1}, {"k2", ""}}, "my_model");
  std::vector<uint8_t> keep;
  const std::vector<TensorView> ts = parse_bin(file, &keep);
  ASSERT_EQ(ts.size(), 6u);
  EXPECT_EQ(ts[0].name, "a");
  EXPECT_EQ(std::memcmp(ts[0].data, s0.data(), 48), 0);
  EXPECT_EQ(std::memcmp(ts[1].data, s0.data() + 32, 16), 0);
  EXPECT_EQ(ts[2].dtype, DType::F16);
  EXPECT_EQ(std::memcmp(ts[2].data, s1.data() + 2, 4), 0);
  EXPECT_EQ(ts[3].nbytes, 0u);
  EXPECT_EQ(ts[4].shape_str(), "[1, 4]");
  EXPECT_EQ(ts[5].nbytes, 0u);
  // torch.save aligns storages to 64 bytes; the builder does too.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ts[0].data) % 64, reinterpret_cast<uintptr_t>(keep.data()) % 64);
}

TEST(TorchBin, StorageErrors) {
  const std::string s = pattern_bytes(16);
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "9", 4, 0, {4}}}, {{"0", s}})), Io,
                   "'t.bin': tensor 'w': its storage 'archive/data/9' is missing from the archive");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 5, 0, {5}}}, {{"0", s}})), Io,
                   "tensor 'w': storage '0' holds 16 bytes, fewer than its 5 elements of 4 bytes");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 1, {4}}}, {{"0", s}})), Io,
                   "tensor 'w': offset 1 + 4 elements exceed its storage '0' of 4 elements");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, -1, {2}}}, {{"0", s}})), Io,
                   "offset -1");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 0, {2, 2}, {1, 2}}}, {{"0", s}})),
                   Unsupported, "tensor 'w' is non-contiguous (shape [2, 2], stride [1, 2])");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 0, {2, -2}}}, {{"0", s}})), Io,
                   "invalid shape [2, -2]");
  EXPECT_XC2_ERROR(
      parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 0, {1 << 30, 1 << 30, 1 << 30}}}, {{"0", s}})), Io,
      "invalid shape");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", int64_t{1} << 62, 0, {4}}}, {{"0", s}})), Io,
                   "holds 16 bytes, fewer than");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 0, {4}}, {"v", "HalfStorage", "0", 8, 0, {8}}},
                                            {{"0", s}})),
                   Io, "storage '0' is used with two dtypes");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "DoubleStorage", "0", 2, 0, {2}}}, {{"0", s}})), Unsupported,
                   "tensor 'w' is stored as torch.DoubleStorage");
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 0, {4}}, {"w", "FloatStorage", "0", 4, 0, {4}}},
                                            {{"0", s}})),
                   Io, "duplicate tensor name 'w'");
}

TEST(TorchBin, PickleShapes) {
  const std::string s = pattern_bytes(16);
  // A cyclic list and other non-tensor values next to a tensor are ignored.
  Pickler p;
  p.proto(2).op('}').str("cyc").op(']').binput(0).binget(0).op('a').op('s');
  p.str("w").global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 4).integer(0);
  p.tuple_of({4}).tuple_of({1}).op(0x89).ordered_dict().op('t').op('R').op('s').stop();
  std::vector<uint8_t> keep;
  const auto ts = parse_bin(make_zip(iotest::make_torch_bin_items(p.bytes(), {{"0", s}})), &keep);
  ASSERT_EQ(ts.size(), 1u);
  EXPECT_EQ(ts[0].name, "w");

  Pickler k;  // tensor under a non-string key
  k.proto(2).op('}').integer(5).global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 4);
  k.integer(0).tuple_of({4}).tuple_of({1}).op(0x89).ordered_dict().op('t').op('R').op('s').stop();
  EXPECT_XC2_ERROR(parse_bin(make_zip(iotest::make_torch_bin_items(k.bytes(), {{"0", s}}))), Io,
                   "a tensor is stored under a int key");

  Pickler e;  // an empty dict is a valid (empty) state dict
  e.proto(2).op('}').stop();
  std::vector<uint8_t> keep2;
  EXPECT_TRUE(parse_bin(make_zip(iotest::make_torch_bin_items(e.bytes(), {})), &keep2).empty());

  Pickler g;  // hostile global inside an otherwise valid archive
  g.proto(2).global("os", "system").str("rm -rf /").op(0x85).op('R').stop();
  EXPECT_XC2_ERROR(parse_bin(make_zip(iotest::make_torch_bin_items(g.bytes(), {}))), Unsupported,
                   "'t.bin': archive/data.pkl: unsupported pickle global 'os.system'");

  // Limits pass through.
  PickleLimits tiny;
  tiny.max_ops = 10;
  std::vector<uint8_t> keep3;
  EXPECT_XC2_ERROR(parse_bin(make_torch_bin({{"w", "FloatStorage", "0", 4, 0, {4}}}, {{"0", s}}), &keep3, tiny), Io,
                   "more than 10 pickle opcodes");
}

TEST(TorchBin, ArchiveLayoutErrors) {
  const std::string pkl = iotest::make_state_dict_pickle({{"w", "FloatStorage", "0", 4, 0, {4}}});
  const std::string s = pattern_bytes(16);
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"archive/other.pkl", pkl}})), Io, "no <prefix>/data.pkl entry");
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"data.pkl", pkl}})), Io, "no <prefix>/data.pkl entry");
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"a/data.pkl", pkl}, {"b/data.pkl", pkl}})), Io, "two pickles");
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"m/constants.pkl", "x"}, {"m/code/x.py", "x"}})), Unsupported, "TorchScript");

  // Compressed (deflate) entries are refused by name.
  ZipItem deflated{"archive/data.pkl", pkl};
  deflated.method = 8;
  EXPECT_XC2_ERROR(parse_bin(make_zip({deflated, {"archive/data/0", s}})), Unsupported,
                   "zip entry 'archive/data.pkl' uses compression method 8");
  ZipItem deflated_storage{"archive/data/0", s};
  deflated_storage.method = 8;
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"archive/data.pkl", pkl}, deflated_storage})), Unsupported,
                   "'archive/data/0' uses compression method 8");
  ZipItem bad_crc{"archive/data.pkl", pkl};
  bad_crc.crc_xor = 1;
  EXPECT_XC2_ERROR(parse_bin(make_zip({bad_crc, {"archive/data/0", s}})), Io, "fails its CRC-32 check");

  // byteorder: little is fine, big is refused, anything else is corrupt.
  std::vector<uint8_t> keep;
  EXPECT_EQ(parse_bin(make_zip({{"archive/byteorder", "little"}, {"archive/data.pkl", pkl}, {"archive/data/0", s}}), &keep)
                .size(),
            1u);
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"archive/byteorder", "big"}, {"archive/data.pkl", pkl}, {"archive/data/0", s}})),
                   Unsupported, "big-endian");
  EXPECT_XC2_ERROR(parse_bin(make_zip({{"archive/byteorder", "middle"}, {"archive/data.pkl", pkl}})), Io,
                   "unknown byte order 'middle'");
}

}  // namespace
}  // namespace xc2::io
