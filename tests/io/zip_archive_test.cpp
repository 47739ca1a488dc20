// Zip index: EOCD search, zip64 records and extra fields (forced on small entries, and a real
// archive with a storage above 4 GiB in a sparse file), and corrupt directories. Oracle: archives
// built byte by byte in io_test_util.cpp.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/mmap_file.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "io/torch_bin.h"
#include "io/zip_archive.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

using iotest::make_zip;
using iotest::pattern_bytes;
using iotest::ZipItem;
using iotest::ZipOptions;

struct Parsed {
  std::vector<uint8_t> buf;
  ZipArchive zip;
};

Parsed parse(const std::string& bytes) {
  Parsed p{std::vector<uint8_t>(bytes.begin(), bytes.end()), {}};
  p.zip = ZipArchive::parse(p.buf.data(), p.buf.size(), "t.zip");
  return p;
}

void put32(std::string& s, size_t at, uint32_t v) {
  for (int k = 0; k < 4; ++k) s[at + k] = static_cast<char>(v >> (8 * k));
}
void put16(std::string& s, size_t at, uint16_t v) {
  for (int k = 0; k < 2; ++k) s[at + k] = static_cast<char>(v >> (8 * k));
}
size_t eocd_of(const std::string& z) { return z.rfind(std::string("PK\x05\x06", 4)); }
size_t central_of(const std::string& z) { return z.find(std::string("PK\x01\x02", 4)); }

TEST(Zip, ParsesEntries) {
  const std::string a = pattern_bytes(100), b = "xyz";
  ZipOptions opt;
  opt.comment = "a comment with PK\x05\x06 inside";
  for (const ZipOptions& o : {ZipOptions{}, opt}) {
    Parsed p = parse(make_zip({{"dir/a", a}, {"dir/b", b}, {"empty", ""}}, o));
    ASSERT_EQ(p.zip.entries().size(), 3u);
    const ZipEntry* ea = p.zip.find("dir/a");
    ASSERT_NE(ea, nullptr);
    EXPECT_EQ(ea->size, 100u);
    EXPECT_EQ(ea->data_offset % 64, 0u);
    EXPECT_EQ(std::memcmp(p.zip.data(*ea, true), a.data(), 100), 0);
    EXPECT_EQ(std::memcmp(p.zip.data(*p.zip.find("dir/b"), true), "xyz", 3), 0);
    EXPECT_EQ(p.zip.find("empty")->size, 0u);
    EXPECT_EQ(p.zip.find("nope"), nullptr);
  }
  Parsed empty = parse(make_zip({}));
  EXPECT_TRUE(empty.zip.entries().empty());
}

TEST(Zip, Zip64ExtraFieldsOnSmallEntries) {
  ZipItem a{"archive/data/0", pattern_bytes(40)};
  a.force_zip64 = true;
  ZipItem b{"archive/data/1", pattern_bytes(8, 5)};
  b.force_zip64 = true;
  ZipOptions o;
  o.zip64_end = true;
  const std::string z = make_zip({a, b}, o);
  Parsed p = parse(z);
  ASSERT_EQ(p.zip.entries().size(), 2u);
  EXPECT_EQ(p.zip.find("archive/data/0")->size, 40u);
  EXPECT_EQ(std::memcmp(p.zip.data(*p.zip.find("archive/data/1"), true), b.data.data(), 8), 0);

  // A whole torch checkpoint in zip64 form.
  const std::string pkl = iotest::make_state_dict_pickle({{"w", "FloatStorage", "0", 10, 0, {10}}});
  auto items = iotest::make_torch_bin_items(pkl, {{"0", pattern_bytes(40)}});
  for (ZipItem& it : items) it.force_zip64 = true;
  std::vector<uint8_t> buf;
  const std::string file = make_zip(items, o);
  buf.assign(file.begin(), file.end());
  const auto ts = parse_torch_bin(buf.data(), buf.size(), "z64.bin");
  ASSERT_EQ(ts.size(), 1u);
  EXPECT_EQ(ts[0].nbytes, 40u);

  // Saturated fields but no zip64 extra field.
  std::string broken = z;
  const size_t c = central_of(broken);
  put16(broken, c + 30, 0);  // central extra length 0: the zip64 values vanish
  EXPECT_XC2_ERROR(parse(broken), Io, "needs a zip64 extra field");
  // A zip64 extra field too short for the saturated fields.
  std::string short_extra = z;
  put16(short_extra, c + 46 + a.name.size() + 2, 8);
  EXPECT_XC2_ERROR(parse(short_extra), Io, "zip64 extra field of 'archive/data/0' is too short");
}

TEST(Zip, Zip64EndRecordErrors) {
  ZipOptions o;
  o.zip64_end = true;
  const std::string z = make_zip({{"a", "hello"}}, o);
  const size_t eocd = eocd_of(z);
  const size_t loc = eocd - 20;
  {
    std::string bad = z;
    put32(bad, loc + 8, 0xFFFFFFF0u);  // locator points past the end
    EXPECT_XC2_ERROR(parse(bad), Io, "zip64 end-of-central-directory offset");
  }
  {
    std::string bad = z;
    const size_t rec = z.rfind(std::string("PK\x06\x06", 4));
    bad[rec] = 'X';
    EXPECT_XC2_ERROR(parse(bad), Io, "bad zip64 end-of-central-directory signature");
  }
  {
    std::string bad = z;
    const size_t rec = z.rfind(std::string("PK\x06\x06", 4));
    put32(bad, rec + 48, 0x7FFFFFF0u);  // central directory offset past EOF
    EXPECT_XC2_ERROR(parse(bad), Io, "zip central directory [2147483632, +");
  }
  {
    std::string bad = z;
    put32(bad, loc + 16, 3);  // three disks
    EXPECT_XC2_ERROR(parse(bad), Unsupported, "multi-disk");
  }
  {
    // EOCD saturated, but the locator is gone.
    std::string bad = z;
    bad[loc] = 'X';
    EXPECT_XC2_ERROR(parse(bad), Io, "needs zip64 values, but there is no zip64 locator");
  }
}

TEST(Zip, CorruptDirectories) {
  const std::string z = make_zip({{"a", "hello"}, {"b", "world!"}});
  const size_t eocd = eocd_of(z);
  const size_t cd = central_of(z);
  EXPECT_XC2_ERROR(parse(""), Io, "not a zip archive");
  EXPECT_XC2_ERROR(parse(std::string(100, 'x')), Io, "no zip end-of-central-directory record");
  {
    std::string bad = z;
    put32(bad, eocd + 16, 0xFFFFFF00u);  // central directory offset past EOF
    EXPECT_XC2_ERROR(parse(bad), Io, "lies outside the archive");
  }
  {
    std::string bad = z;
    put32(bad, eocd + 12, 0x10000000u);  // central directory size past EOF
    EXPECT_XC2_ERROR(parse(bad), Io, "lies outside the archive");
  }
  {
    std::string bad = z;
    put16(bad, eocd + 8, 1000);
    put16(bad, eocd + 10, 1000);
    EXPECT_XC2_ERROR(parse(bad), Io, "cannot hold 1000 entries");
  }
  {
    std::string bad = z;
    put16(bad, eocd + 4, 1);
    EXPECT_XC2_ERROR(parse(bad), Unsupported, "multi-disk");
  }
  {
    std::string bad = z;
    bad[cd + 1] = 'X';
    EXPECT_XC2_ERROR(parse(bad), Io, "central directory entry 0 is corrupt");
  }
  {
    std::string bad = z;
    put16(bad, cd + 28, 60000);  // name length runs past the directory
    EXPECT_XC2_ERROR(parse(bad), Io, "overruns the central directory");
  }
  {
    std::string bad = z;
    put32(bad, cd + 42, static_cast<uint32_t>(cd + 4));  // local header offset inside the directory
    EXPECT_XC2_ERROR(parse(bad), Io, "local header of 'a' at offset");
  }
  {
    std::string bad = z;
    put32(bad, cd + 42, 0xFFFFFFF0u - 1);
    EXPECT_XC2_ERROR(parse(bad), Io, "is missing or out of range");
  }
  {
    std::string bad = z;
    bad[0] = 'X';  // local header signature
    EXPECT_XC2_ERROR(parse(bad), Io, "local header of 'a'");
  }
  {
    std::string bad = z;
    bad[30] = 'q';  // local name differs from the central one
    EXPECT_XC2_ERROR(parse(bad), Io, "does not match central directory entry 'a'");
  }
  {
    std::string bad = z;
    put16(bad, 28, 60000);  // local extra length runs into the directory
    EXPECT_XC2_ERROR(parse(bad), Io, "local header of 'a' overruns the central directory");
  }
  {
    std::string bad = z;
    put32(bad, cd + 20, 1u << 20);  // compressed size runs past the directory
    put32(bad, cd + 24, 1u << 20);
    EXPECT_XC2_ERROR(parse(bad), Io, "data [64, +1048576) runs past the central directory");
  }
  {
    std::string bad = z;
    put32(bad, cd + 24, 4);  // stored entry with compressed size != size
    Parsed p = parse(bad);
    EXPECT_XC2_ERROR(p.zip.data(*p.zip.find("a")), Io, "compressed size 5 != size 4");
  }
  {
    std::string bad = z;
    put16(bad, cd + 8, 1);  // encrypted flag
    Parsed p = parse(bad);
    EXPECT_XC2_ERROR(p.zip.data(*p.zip.find("a")), Unsupported, "encrypted");
  }
  EXPECT_XC2_ERROR(parse(make_zip({{"a", "1"}, {"a", "2"}})), Io, "duplicate zip entry 'a'");
}

TEST(Zip, StorageAbove4GiBInSparseFile) {
  // A real zip64 checkpoint: data.pkl at the start, the storage's local header at 4 GiB + 4 KiB,
  // central directory and end records after it. The hole costs no disk space on Linux filesystems.
  test::TempDir dir;
  const std::string path = dir.file("big.bin");
  const std::string storage = pattern_bytes(64, 9);
  const std::string pkl = iotest::make_state_dict_pickle({{"w", "BFloat16Storage", "0", 32, 0, {4, 8}}});
  auto items = iotest::make_torch_bin_items(pkl, {{"0", storage}}, "big");
  items[1].min_offset = (uint64_t{1} << 32) + 4096;  // big/data/0
  const iotest::ZipChunks chunks = iotest::make_zip_chunks(items);
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  bool ok = ::ftruncate(fd, static_cast<off_t>(chunks.size)) == 0;
  for (const auto& c : chunks.chunks) {
    ok = ok && ::pwrite(fd, c.second.data(), c.second.size(), static_cast<off_t>(c.first)) ==
                   static_cast<ssize_t>(c.second.size());
  }
  struct stat st {};
  ok = ok && ::fstat(fd, &st) == 0;
  ::close(fd);
  if (!ok || static_cast<uint64_t>(st.st_blocks) * 512 > (uint64_t{1} << 30)) {
    GTEST_SKIP() << "no sparse-file support here";
  }
  const Checkpoint ck = Checkpoint::open_file(path);
  const TensorView* w = ck.find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::BF16);
  EXPECT_EQ(w->shape_str(), "[4, 8]");
  EXPECT_EQ(std::memcmp(w->data, storage.data(), 64), 0);
  EXPECT_EQ(w->file, "big.bin");
}

TEST(Zip, Crc32) {
  EXPECT_EQ(crc32(reinterpret_cast<const uint8_t*>("123456789"), 9), 0xCBF43926u);
  EXPECT_EQ(crc32(nullptr, 0), 0u);
}

}  // namespace
}  // namespace xc2::io
