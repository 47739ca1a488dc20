// safetensors reader: good files (built here) and hostile headers. Oracle: the bytes the test wrote.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/mmap_file.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "io/safetensors.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

using iotest::make_safetensors;
using iotest::make_safetensors_raw;
using iotest::pattern_bytes;
using iotest::StTensor;

std::vector<TensorView> parse(const std::string& bytes, const std::string& name = "x.safetensors") {
  // An exact-size heap copy, so ASan sees any read past the end.
  std::vector<uint8_t> buf(bytes.begin(), bytes.end());
  return parse_safetensors(buf.data(), buf.size(), name);
}

// Parses a header with one 64-byte data section.
void parse_header(const std::string& header) { parse(make_safetensors_raw(header, std::string(64, '\0'))); }

TEST(Safetensors, ParsesGoodFile) {
  const std::string a = pattern_bytes(24, 1), b = pattern_bytes(8, 2), c = pattern_bytes(2, 3);
  const std::string file = make_safetensors({{"w.f32", "F32", {2, 3}, a},
                                             {"w.f16", "F16", {4}, b},
                                             {"s.bf16", "BF16", {}, c},
                                             {"empty", "BF16", {0, 5}, ""}});
  std::vector<uint8_t> buf(file.begin(), file.end());
  const std::vector<TensorView> ts = parse_safetensors(buf.data(), buf.size(), "m.safetensors");
  ASSERT_EQ(ts.size(), 4u);
  // Sorted by data offset; the empty tensor sits at the end of the data.
  EXPECT_EQ(ts[0].name, "w.f32");
  EXPECT_EQ(ts[0].dtype, DType::F32);
  EXPECT_EQ(ts[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ts[0].nbytes, 24u);
  EXPECT_EQ(ts[0].numel(), 6);
  EXPECT_EQ(ts[0].shape_str(), "[2, 3]");
  EXPECT_EQ(ts[0].file, "m.safetensors");
  EXPECT_EQ(std::memcmp(ts[0].data, a.data(), 24), 0);
  EXPECT_EQ(ts[1].dtype, DType::F16);
  EXPECT_EQ(std::memcmp(ts[1].data, b.data(), 8), 0);
  EXPECT_EQ(ts[2].name, "s.bf16");
  EXPECT_EQ(ts[2].shape.size(), 0u);
  EXPECT_EQ(ts[2].numel(), 1);
  EXPECT_EQ(ts[2].shape_str(), "[]");
  EXPECT_EQ(std::memcmp(ts[2].data, c.data(), 2), 0);
  EXPECT_EQ(ts[3].name, "empty");
  EXPECT_EQ(ts[3].nbytes, 0u);
  EXPECT_EQ(ts[3].numel(), 0);
  // Zero-copy: views point into the buffer.
  EXPECT_GE(static_cast<const uint8_t*>(ts[0].data), buf.data());
  EXPECT_LT(static_cast<const uint8_t*>(ts[0].data), buf.data() + buf.size());
}

TEST(Safetensors, AcceptsMetadataGapsAndEmptyHeader) {
  EXPECT_TRUE(parse(make_safetensors_raw("{}", "")).empty());
  EXPECT_TRUE(parse(make_safetensors_raw("{\"__metadata__\":{\"a\":\"b\"}}  ", "")).empty());
  // A gap between tensors is allowed (only overlaps are errors); unknown extra keys are ignored.
  const auto ts = parse(make_safetensors_raw(
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12],\"extra\":1}}",
      std::string(16, 'x')));
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts[1].name, "b");
}

TEST(Safetensors, RejectsTinyAndHugeHeaderLengths) {
  EXPECT_XC2_ERROR(parse(""), Io, "smaller than the 8-byte header length");
  EXPECT_XC2_ERROR(parse("1234567"), Io, "'x.safetensors'");
  std::string huge(8, '\xff');
  EXPECT_XC2_ERROR(parse(huge + "{}"), Io, "exceeds the file");
  std::string past = make_safetensors_raw("{}", "");
  past[0] = 3;  // claims 3 header bytes, 2 present
  EXPECT_XC2_ERROR(parse(past), Io, "exceeds the file");
  EXPECT_XC2_ERROR(parse(make_safetensors_raw("", "")), Io, "too short");
}

TEST(Safetensors, RejectsHeaderOverLimitInBigFile) {
  // A sparse 100 MB + 64 B file whose header length is just over the limit: the limit check fires
  // before any JSON is read.
  test::TempDir dir;
  const std::string path = dir.file("big.safetensors");
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const uint64_t n = kMaxSafetensorsHeaderBytes + 1;
  uint8_t len[8];
  for (int k = 0; k < 8; ++k) len[k] = static_cast<uint8_t>(n >> (8 * k));
  ASSERT_EQ(::write(fd, len, 8), 8);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(n + 64)), 0);
  ::close(fd);
  EXPECT_XC2_ERROR(load_safetensors(path), Io, "exceeds the 100000000-byte limit");
}

TEST(Safetensors, RejectsNonObjectHeaders) {
  EXPECT_XC2_ERROR(parse_header("not json at all"), Io, "not valid JSON");
  EXPECT_XC2_ERROR(parse_header("{\"a\": "), Io, "not valid JSON");
  EXPECT_XC2_ERROR(parse_header("[1, 2, 3]"), Io, "is a JSON array, expected an object");
  EXPECT_XC2_ERROR(parse_header("\"str\""), Io, "expected an object");
  EXPECT_XC2_ERROR(parse_header(std::string(50000, '[') + std::string(50000, ']')), Io, "expected an object");
  EXPECT_XC2_ERROR(parse_header("{\"a\":" + std::string(50000, '[') + std::string(50000, ']') + "}"), Io,
                   "tensor 'a' is a JSON array");
  EXPECT_XC2_ERROR(parse_header("{\"__metadata__\": [1]}"), Io, "__metadata__ is a JSON array");
  EXPECT_XC2_ERROR(parse_header("{\"__metadata__\": {\"k\": 1}}"), Io, "__metadata__ value 'k' is not a string");
  EXPECT_XC2_ERROR(parse_header("{\"t\": 5}"), Io, "tensor 't' is a JSON number");
  EXPECT_XC2_ERROR(parse_header("{\"\": {\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}"), Io, "empty name");
}

TEST(Safetensors, RejectsMissingFields) {
  EXPECT_XC2_ERROR(parse_header("{\"t\": {\"shape\":[1],\"data_offsets\":[0,4]}}"), Io, "tensor 't' lacks dtype");
  EXPECT_XC2_ERROR(parse_header("{\"t\": {\"dtype\":\"F32\",\"data_offsets\":[0,4]}}"), Io, "lacks shape");
  EXPECT_XC2_ERROR(parse_header("{\"t\": {\"dtype\":\"F32\",\"shape\":[1]}}"), Io, "lacks data_offsets");
}

TEST(Safetensors, OffsetErrorsNameFileAndTensor) {
  const std::string file = make_safetensors_raw("{\"x\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,99]}}",
                                                std::string(64, '\0'));
  EXPECT_XC2_ERROR(parse(file, "model-00001-of-00002.safetensors"), Io,
                   "'model-00001-of-00002.safetensors': tensor 'x' data_offsets [0, 99] exceed the data section (64 bytes)");
  EXPECT_XC2_ERROR(parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}"), Io,
                   "[8, 4] with begin > end");
  EXPECT_XC2_ERROR(parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}"), Io,
                   "invalid data_offsets");
  EXPECT_XC2_ERROR(parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}"), Io,
                   "invalid data_offsets");
  EXPECT_XC2_ERROR(parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}"), Io,
                   "invalid data_offsets");
  EXPECT_XC2_ERROR(parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}}"), Io,
                   "invalid data_offsets");
  EXPECT_XC2_ERROR(parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}"), Io,
                   "invalid data_offsets");
  EXPECT_XC2_ERROR(
      parse_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}"), Io,
      "invalid data_offsets");
}

TEST(Safetensors, RejectsOverlaps) {
  EXPECT_XC2_ERROR(parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]}}"),
                   Io, "tensors 'a' [0, 16) and 'b' [12, 28) overlap");
  EXPECT_XC2_ERROR(parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}"),
                   Io, "overlap");
  // A tensor inside another one.
  EXPECT_XC2_ERROR(parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
                                "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}"),
                   Io, "overlap");
  // Empty tensors overlap nothing, even at the same offset as another tensor.
  const auto ts = parse(make_safetensors_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                             "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                                             "\"f\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]}}",
                                             std::string(16, 'x')));
  EXPECT_EQ(ts.size(), 3u);
}

TEST(Safetensors, DtypeErrors) {
  const char* unsupported[] = {"F64", "I64", "I16", "I8", "U8", "U16", "BOOL", "F8_E4M3", "F8_E5M2"};
  for (const char* dt : unsupported) {
    EXPECT_XC2_ERROR(parse_header(std::string("{\"t\":{\"dtype\":\"") + dt +
                                  "\",\"shape\":[1],\"data_offsets\":[0,8]}}"),
                     Unsupported, std::string("tensor 't' has unsupported dtype ") + dt);
  }
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"FLOAT\",\"shape\":[1],\"data_offsets\":[0,4]}}"), Io,
                   "tensor 't' has unknown dtype \"FLOAT\"");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}"), Io,
                   "unknown dtype");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}"), Io,
                   "non-string dtype");
}

TEST(Safetensors, ShapeErrors) {
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}"), Io,
                   "tensor 't' data_offsets [0, 8] hold 8 bytes, but F32 [3] needs 12");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}"), Io,
                   "invalid shape [-1]");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}"), Io,
                   "invalid shape");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}"), Io,
                   "invalid shape");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}"), Io,
                   "non-array shape");
  // numel overflows int64; numel * 4 overflows uint64; a dim beyond int64.
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}"),
                   Io, "overflows");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}"),
                   Io, "overflows");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615],\"data_offsets\":[0,0]}}"),
                   Io, "invalid shape");
  // A zero dim makes a huge product legal (and empty).
  EXPECT_NO_THROW(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904],\"data_offsets\":[0,0]}}"));
}

TEST(Safetensors, RejectsDuplicateNames) {
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}"),
                   Io, "duplicate tensor name 't'");
  EXPECT_XC2_ERROR(parse_header("{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}"),
                   Io, "duplicate key 'dtype'");
}

TEST(Safetensors, OpenFileNamesTheFile) {
  test::TempDir dir;
  test::write_bytes(dir.file("model-00001-of-00002.safetensors"),
                    make_safetensors_raw("{\"x\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]}}",
                                         std::string(60, '\0')));
  EXPECT_XC2_ERROR(Checkpoint::open_file(dir.file("model-00001-of-00002.safetensors")), Io,
                   "'model-00001-of-00002.safetensors': tensor 'x' data_offsets [0, 64] exceed the data section "
                   "(60 bytes)");
  EXPECT_XC2_ERROR(Checkpoint::open_file(dir.file("missing.safetensors")), NotFound, "missing.safetensors");

  const std::string good = make_safetensors({{"a", "F16", {3}, pattern_bytes(6)}});
  test::write_bytes(dir.file("weights.bin"), good);  // detected from the bytes, not the name
  const Checkpoint ck = Checkpoint::open_file(dir.file("weights.bin"));
  EXPECT_EQ(ck.format(), CheckpointFormat::Safetensors);
  ASSERT_NE(ck.find("a"), nullptr);
  EXPECT_EQ(ck.find("b"), nullptr);
  EXPECT_EQ(ck.total_bytes(), 6u);
  EXPECT_EQ(ck.files().size(), 1u);

  test::write_bytes(dir.file("junk.dat"), "hello world, not a checkpoint");
  EXPECT_XC2_ERROR(Checkpoint::open_file(dir.file("junk.dat")), Io, "neither a safetensors file nor a torch.save");
  test::write_bytes(dir.file("empty.safetensors"), make_safetensors_raw("{}", ""));
  EXPECT_XC2_ERROR(Checkpoint::open_file(dir.file("empty.safetensors")), Io, "holds no tensors");
}

TEST(Safetensors, FormatDetectedFromBytesWhateverTheHeaderLength) {
  // Header lengths whose little-endian bytes start like a pickle (0x80 0x02 = 640) or a zip
  // ("PK" = 0x4b50 = 19280) must still be read as safetensors, whatever the file is called.
  test::TempDir dir;
  for (const size_t n : {size_t{640}, size_t{19280}}) {
    SCOPED_TRACE(n);
    std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    header.append(n - header.size(), ' ');
    const std::string file = make_safetensors_raw(header, pattern_bytes(8));
    for (const char* name : {"model.safetensors", "pytorch_model.bin", "weights"}) {
      test::write_bytes(dir.file(name), file);
      const Checkpoint ck = Checkpoint::open_file(dir.file(name));
      EXPECT_EQ(ck.format(), CheckpointFormat::Safetensors) << name;
      EXPECT_NE(ck.find("w"), nullptr);
    }
  }
}

}  // namespace
}  // namespace xc2::io
