// run_bench on a tiny checkpoint: every row is there with a measured, positive number (the speeds
// themselves are for `xc2 bench` to print, never asserted). CPU here; CUDA (label `cuda`) also checks the
// GPU memory row against the device's size.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "backends/backend.h"
#include "bench/bench.h"
#include "model/model_test_util.h"
#include "support/test_util.h"

namespace xc2 {
namespace {

BenchOptions tiny_options(const std::string& device) {
  BenchOptions o;
  o.model_dir = test::data_path("models/tiny-a");
  o.device = device;
  o.threads = 1;
  o.text_tokens = 8;
  o.decode_steps = 6;
  o.repeats = 1;
  o.reference = false;
  o.decode_batches = {2};
  o.caption_batch = 2;
  o.caption_tokens = 4;
  return o;
}

std::map<std::string, BenchRow> by_name(const BenchReport& r) {
  std::map<std::string, BenchRow> m;
  for (const BenchRow& row : r.rows) m[row.name] = row;
  return m;
}

TEST(Bench, CpuTinyModelMeasuresEveryRow) {
  const BenchReport r = run_bench(tiny_options("cpu"));
  const auto rows = by_name(r);
  for (const char* name :
       {"read bandwidth", "f32 FMA peak", "ViT", "prefill", "decode", "decode batch 2", "peak RSS"}) {
    ASSERT_TRUE(rows.count(name)) << "no row '" << name << "'";
    EXPECT_GT(rows.at(name).value, 0) << name;
  }
  EXPECT_NE(rows.at("decode").note.find("roofline"), std::string::npos) << rows.at("decode").note;
}

TEST(CudaBench, TinyModelMeasuresEveryRowAndTheMemory) {
  XC2_SKIP_IF_NO_CUDA();
  const BenchReport r = run_bench(tiny_options("cuda"));
  const auto rows = by_name(r);
  for (const char* name :
       {"copy bandwidth", "load", "ViT", "prefill", "decode", "decode batch 2", "caption", "GPU memory"}) {
    ASSERT_TRUE(rows.count(name)) << "no row '" << name << "'";
    EXPECT_GT(rows.at(name).value, 0) << name;
  }
  // A tiny model at a 4096-token context: the CUDA context and a few MiB, far below the card.
  EXPECT_LT(rows.at("GPU memory").value, 8.0) << rows.at("GPU memory").note;
  EXPECT_EQ(rows.at("GPU memory").note.find("does NOT fit"), std::string::npos) << rows.at("GPU memory").note;
}

// --quant on a copy of tiny-a (the GPTQ copy is written next to the checkpoint, so not into tests/data): the
// quantized rows are there with measured numbers.
BenchOptions tiny_quant_options(const std::string& device, const test::TempDir& tmp) {
  BenchOptions o = tiny_options(device);
  const std::string copy = tmp.file("tiny-a");
  std::filesystem::copy(o.model_dir, copy, std::filesystem::copy_options::recursive);
  o.model_dir = copy;
  o.quant_bits = {4};
  o.quant_group_size = 32;
  o.decode_batches = {2};
  o.caption_batch = 0;
  return o;
}

TEST(Bench, CpuQuantRowsOnATinyCopy) {
  test::TempDir tmp;
  const BenchReport r = run_bench(tiny_quant_options("cpu", tmp));
  int decode_rows = 0, paired_rows = 0;
  for (const BenchRow& row : r.rows) {
    if (row.name.rfind("W4 decode (", 0) == 0) {
      ++decode_rows;
      EXPECT_GT(row.value, 0) << row.name;
      // The tiny models fit in memory twice over: the ratios come from runs paired with the 16-bit model.
      EXPECT_NE(row.note.find("the paired 16-bit runs' decode"), std::string::npos) << row.note;
      // Each quantized run is also judged against the read bandwidth measured around it: one figure per run.
      const size_t at = row.note.find("just before and after it");
      ASSERT_NE(at, std::string::npos) << row.note;
      int per_run = 0;
      for (size_t p = row.note.find("% at ", at); p != std::string::npos; p = row.note.find("% at ", p + 1)) ++per_run;
      EXPECT_EQ(per_run, tiny_options("cpu").repeats) << row.note;
    }
    if (row.name.rfind("W4 paired 16-bit (", 0) == 0) {
      ++paired_rows;
      EXPECT_GT(row.value, 0) << row.name;
    }
  }
  EXPECT_EQ(decode_rows, 2);  // the default quantized path and --exact
  EXPECT_EQ(paired_rows, 2);
  // Batched decode: on the default path only, with its ratio to the 16-bit batch row of the same run.
  int batch_rows = 0;
  for (const BenchRow& row : r.rows)
    if (row.name.rfind("W4 decode batch 2 (", 0) == 0) {
      ++batch_rows;
      EXPECT_EQ(row.name.find("(exact)"), std::string::npos) << row.name;  // not the --exact run
      EXPECT_GT(row.value, 0) << row.name;
      EXPECT_NE(row.note.find("x the 16-bit batch 2 row"), std::string::npos) << row.note;
    }
  EXPECT_EQ(batch_rows, 1);
}

TEST(CudaBench, QuantRowsOnATinyCopy) {
  XC2_SKIP_IF_NO_CUDA();
  test::TempDir tmp;
  const BenchReport r = run_bench(tiny_quant_options("cuda", tmp));
  const auto rows = by_name(r);
  for (const char* name : {"prefill", "decode", "W4 prefill", "W4 decode", "W4 GPU memory"}) {
    ASSERT_TRUE(rows.count(name)) << "no row '" << name << "'";
    EXPECT_GT(rows.at(name).value, 0) << name;
  }
  EXPECT_NE(rows.at("W4 decode").note.find("roofline"), std::string::npos) << rows.at("W4 decode").note;
}

// The allocator's accounting: what a tensor holds counts while it lives, the peak remembers it.
TEST(CudaBench, MemoryStatsFollowTensors) {
  XC2_SKIP_IF_NO_CUDA();
  auto be = make_cuda_backend(0, DType::BF16);
  const Backend::MemoryStats m0 = be->memory_stats();
  EXPECT_GT(m0.device_total, 0u);
  be->reset_memory_peak();
  {
    Tensor t = be->empty({64, 1024, 1024}, DType::BF16);  // 128 MiB
    const Backend::MemoryStats m1 = be->memory_stats();
    EXPECT_EQ(m1.needed, m0.needed + (uint64_t(128) << 20));
  }
  const Backend::MemoryStats m2 = be->memory_stats();
  EXPECT_EQ(m2.needed, m0.needed);
  EXPECT_EQ(m2.peak, m0.needed + (uint64_t(128) << 20));
  EXPECT_GE(m2.cached, uint64_t(128) << 20);
}

}  // namespace
}  // namespace xc2
