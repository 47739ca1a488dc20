// Robustness: every truncation of a small safetensors file and of small torch .bin files must give
// an xc2::Error (never a crash, another exception type, or a read past the buffer: each input is an
// exact-size heap copy, so ASan sees overreads), and seeded random byte corruptions must either load
// or give an xc2::Error. Oracle: "no crash, only xc2::Error".
#include <cstring>
#include <random>
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

using iotest::pattern_bytes;

enum class Fmt { Safetensors, TorchBin };

// Parses bytes[0, n) from an exact-size buffer; returns true on success, false on xc2::Error.
bool try_parse(const std::string& bytes, size_t n, Fmt fmt) {
  std::vector<uint8_t> buf(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
  try {
    const std::vector<TensorView> ts = fmt == Fmt::Safetensors ? parse_safetensors(buf.data(), buf.size(), "f")
                                                               : parse_torch_bin(buf.data(), buf.size(), "f");
    // Touch every byte of every view: it must lie inside the buffer.
    unsigned sum = 0;
    for (const TensorView& t : ts) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      for (size_t k = 0; k < t.nbytes; ++k) sum += p[k];
    }
    (void)sum;
    return true;
  } catch (const Error&) {
    return false;
  }
}

std::string small_safetensors() {
  return iotest::make_safetensors({{"a.weight", "F32", {2, 3}, pattern_bytes(24)},
                                   {"b", "BF16", {5}, pattern_bytes(10, 3)},
                                   {"c", "F16", {}, pattern_bytes(2, 7)}});
}

std::string small_torch_bin() {
  return iotest::make_torch_bin({{"a.weight", "FloatStorage", "0", 6, 0, {2, 3}},
                                 {"b", "BFloat16Storage", "1", 5, 0, {5}},
                                 {"b.tail", "BFloat16Storage", "1", 5, 2, {3}}},
                                {{"0", pattern_bytes(24)}, {"1", pattern_bytes(10, 3)}});
}

TEST(Robustness, EveryTruncationOfSafetensorsFails) {
  const std::string file = small_safetensors();
  ASSERT_TRUE(try_parse(file, file.size(), Fmt::Safetensors));
  for (size_t n = 0; n < file.size(); ++n) EXPECT_FALSE(try_parse(file, n, Fmt::Safetensors)) << "length " << n;
}

TEST(Robustness, EveryTruncationOfTorchBinFails) {
  for (const std::string& file : {small_torch_bin(), read_file(test::data_path("io/state_p2.bin")),
                                  read_file(test::data_path("io/state_p4.bin"))}) {
    ASSERT_TRUE(try_parse(file, file.size(), Fmt::TorchBin));
    for (size_t n = 0; n < file.size(); ++n) EXPECT_FALSE(try_parse(file, n, Fmt::TorchBin)) << "length " << n;
  }
}

TEST(Robustness, TruncatedFilesThroughOpenFile) {
  // The file path (mmap, format detection by content or extension) on a sample of lengths.
  test::TempDir d;
  const std::string st = small_safetensors();
  const std::string bin = read_file(test::data_path("io/state_p2.bin"));
  for (size_t n = 0; n < bin.size(); n += 7) {
    if (n < st.size()) {
      test::write_bytes(d.file("m.safetensors"), st.substr(0, n));
      EXPECT_THROW(Checkpoint::open_file(d.file("m.safetensors")), Error) << n;
    }
    test::write_bytes(d.file("pytorch_model.bin"), bin.substr(0, n));
    EXPECT_THROW(Checkpoint::open_file(d.file("pytorch_model.bin")), Error) << n;
  }
}

// Flips 1-4 random bytes per mutant; the parse must succeed or throw xc2::Error.
void fuzz(const std::string& file, Fmt fmt, int n_mutants, uint32_t seed) {
  std::mt19937 rng(seed);
  int ok = 0;
  for (int m = 0; m < n_mutants; ++m) {
    std::string mutant = file;
    const int n_flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < n_flips; ++f) {
      const size_t at = rng() % mutant.size();
      switch (rng() % 3) {
        case 0: mutant[at] = static_cast<char>(rng()); break;
        case 1: mutant[at] = static_cast<char>(mutant[at] ^ (1 << (rng() % 8))); break;
        default: mutant[at] = static_cast<char>(rng() % 2 ? 0xff : 0x00); break;
      }
    }
    ok += try_parse(mutant, mutant.size(), fmt);
  }
  ::testing::Test::RecordProperty("parsed_ok", ok);
}

TEST(Robustness, RandomCorruptionsOfSafetensors) { fuzz(small_safetensors(), Fmt::Safetensors, 3000, 1); }

TEST(Robustness, RandomCorruptionsOfTorchBin) {
  fuzz(small_torch_bin(), Fmt::TorchBin, 1500, 2);
  // Corruptions confined to the pickle of a real torch.save file reach the VM (a CRC mismatch would
  // stop most of them first, so the CRC is recomputed by rebuilding the archive).
  const std::string pkl = iotest::make_state_dict_pickle({{"a", "FloatStorage", "0", 6, 0, {2, 3}},
                                                          {"b", "HalfStorage", "1", 4, 1, {3}}});
  std::mt19937 rng(3);
  for (int m = 0; m < 1500; ++m) {
    std::string p = pkl;
    const int n_flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < n_flips; ++f) p[rng() % p.size()] = static_cast<char>(rng());
    const std::string file =
        iotest::make_zip(iotest::make_torch_bin_items(p, {{"0", pattern_bytes(24)}, {"1", pattern_bytes(8)}}));
    try_parse(file, file.size(), Fmt::TorchBin);
  }
}

}  // namespace
}  // namespace xc2::io
