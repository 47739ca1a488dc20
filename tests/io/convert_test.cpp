// safetensors writer and convert_checkpoint: the written files parse back with the same names,
// dtypes, shapes and bytes (oracle: the source checkpoint), follow the HF naming and header layout,
// and the converter copies the non-weight files and refuses to overwrite weights.
#include <algorithm>
#include <cstring>
#include <filesystem>
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

namespace fs = std::filesystem;
using iotest::expect_same_checkpoint;
using iotest::pattern_bytes;

// Tensors of mixed dtypes and sizes, in a deliberately unaligned order.
struct Sample {
  std::vector<std::string> bytes;
  std::vector<TensorView> views;
  Sample() {
    const struct { const char* name; DType dt; std::vector<int64_t> shape; } specs[] = {
        {"h1", DType::F16, {3}}, {"f1", DType::F32, {2, 5}}, {"b1", DType::BF16, {7}},
        {"f2", DType::F32, {4}}, {"e", DType::BF16, {0, 3}}, {"s", DType::F32, {}},
        {"big", DType::F16, {40}}};
    bytes.reserve(std::size(specs));
    uint8_t seed = 0;
    for (const auto& s : specs) {
      TensorView v;
      v.name = s.name;
      v.dtype = s.dt;
      v.shape = s.shape;
      v.nbytes = static_cast<size_t>(v.numel()) * dtype_size(v.dtype);
      bytes.push_back(pattern_bytes(v.nbytes, seed++));
      v.data = bytes.back().data();
      views.push_back(v);
    }
  }
};

TEST(Convert, WritesSingleFile) {
  Sample s;
  test::TempDir d;
  const std::string out = d.file("out/nested");
  write_safetensors_shards(s.views, out, 0);
  EXPECT_FALSE(file_exists(path_join(out, "model.safetensors.index.json")));
  const Checkpoint ck = Checkpoint::open_dir(out);
  EXPECT_EQ(ck.files(), std::vector<std::string>{path_join(out, "model.safetensors")});
  ASSERT_EQ(ck.tensors().size(), s.views.size());
  for (const TensorView& v : s.views) {
    const TensorView* u = ck.find(v.name);
    ASSERT_NE(u, nullptr);
    EXPECT_EQ(u->shape, v.shape);
    EXPECT_EQ(std::memcmp(u->data, v.data, v.nbytes), 0);
  }

  // Header: 8 + n is a multiple of 8, __metadata__ = {"format": "pt"}, every tensor aligned to its
  // element size, data packed without gaps to the end of the file.
  const std::string file = read_file(path_join(out, "model.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_NE(file.substr(8, n).find("\"__metadata__\":{\"format\":\"pt\"}"), std::string::npos);
  const LoadedFile lf = load_safetensors(path_join(out, "model.safetensors"));
  size_t covered = 0;
  for (const TensorView& v : lf.tensors) {
    const size_t offset = static_cast<size_t>(static_cast<const uint8_t*>(v.data) - lf.map->data());
    EXPECT_EQ(offset % dtype_size(v.dtype), 0u) << v.name;
    covered += v.nbytes;
  }
  EXPECT_EQ(covered, file.size() - 8 - n);
}

TEST(Convert, WritesShardsAndIndex) {
  Sample s;
  test::TempDir d;
  write_safetensors_shards(s.views, d.path(), 48);
  const Checkpoint ck = Checkpoint::open_dir(d.path());
  const size_t n_shards = ck.files().size();
  ASSERT_GT(n_shards, 2u);
  char first[64];
  std::snprintf(first, sizeof(first), "model-00001-of-%05zu.safetensors", n_shards);
  EXPECT_TRUE(file_exists(d.file(first)));
  // Each shard holds at most 48 bytes unless a single tensor is larger ("big" is 80 bytes).
  for (const std::string& f : ck.files()) {
    const LoadedFile lf = load_safetensors(f);
    size_t bytes = 0;
    for (const TensorView& v : lf.tensors) bytes += v.nbytes;
    EXPECT_TRUE(bytes <= 48 || lf.tensors.size() == 1) << f;
  }
  const std::string index = read_file(d.file("model.safetensors.index.json"));
  EXPECT_NE(index.find("\"total_size\": 160"), std::string::npos) << index;
  EXPECT_NE(index.find("\"h1\": \"" + std::string(first) + "\""), std::string::npos) << index;

  // Refuses to write next to existing weights, and checks its input.
  EXPECT_XC2_ERROR(write_safetensors_shards(s.views, d.path(), 0), InvalidArgument, "already holds");
  test::TempDir e;
  std::vector<TensorView> dup = {s.views[0], s.views[0]};
  EXPECT_XC2_ERROR(write_safetensors_shards(dup, e.path(), 0), InvalidArgument, "duplicate tensor 'h1'");
  std::vector<TensorView> bad = {s.views[1]};
  bad[0].nbytes = 3;
  EXPECT_XC2_ERROR(write_safetensors_shards(bad, e.path(), 0), InvalidArgument, "has 3 bytes for F32 [2, 5]");
}

// Bytes streamed while writing (no TensorView::data): the same files as from the data, in pieces of any
// size; too few or too many bytes for a tensor are an error.
TEST(Convert, WritesStreamedBytes) {
  Sample s;
  std::vector<TensorView> views = s.views;
  for (TensorView& v : views) v.data = nullptr;
  auto in_pieces = [&](const TensorView& t, const WriteBytes& write) {
    const size_t i = static_cast<size_t>(std::find_if(s.views.begin(), s.views.end(),
                                                      [&](const TensorView& v) { return v.name == t.name; }) -
                                         s.views.begin());
    const std::string& b = s.bytes.at(i);
    for (size_t off = 0; off < b.size(); off += 3) write(b.data() + off, std::min<size_t>(3, b.size() - off));
  };
  test::TempDir d, e;
  write_safetensors_shards(s.views, d.path(), 48);
  write_safetensors_shards(views, e.path(), 48, in_pieces);
  const Checkpoint written = Checkpoint::open_dir(d.path());
  for (const std::string& f : written.files())
    EXPECT_EQ(read_file(f), read_file(e.file(path_basename(f)))) << f;

  EXPECT_XC2_ERROR(write_safetensors_shards(views, d.file("x"), 0), InvalidArgument, "tensor 'h1' has no data");
  EXPECT_XC2_ERROR(write_safetensors_shards(views, d.file("short"), 0,
                                            [](const TensorView& t, const WriteBytes& write) {
                                              if (t.nbytes > 0) write(t.data, 0);
                                            }),
                   InvalidArgument, "0 of 40 bytes given for tensor 'f1'");
  const std::string zeros(64, '\0');
  EXPECT_XC2_ERROR(write_safetensors_shards(views, d.file("long"), 0,
                                            [&](const TensorView&, const WriteBytes& write) { write(zeros.data(), 41); }),
                   InvalidArgument, "more than");
}

TEST(Convert, BinFolderRoundTrip) {
  // A single-file .bin folder with the usual companions.
  test::TempDir src;
  fs::copy_file(test::data_path("io/state_p2.bin"), src.file("pytorch_model.bin"));
  test::write_bytes(src.file("config.json"), "{\"model_type\": \"internlmxcomposer2\", \"img_size\": 28}");
  test::write_bytes(src.file("tokenizer.model"), "sp");
  test::write_bytes(src.file("modeling_internlm2.py"), "# code");
  test::write_bytes(src.file("training_args.bin"), "junk");
  fs::create_directory(src.file("subdir"));
  test::TempDir dst;
  const std::string out = dst.file("converted");
  convert_checkpoint(src.path(), out, 0);

  const Checkpoint a = Checkpoint::open_dir(src.path());
  const Checkpoint b = Checkpoint::open_dir(out);
  EXPECT_EQ(b.format(), CheckpointFormat::Safetensors);
  expect_same_checkpoint(a, b);
  EXPECT_EQ(read_file(path_join(out, "config.json")), read_file(src.file("config.json")));
  EXPECT_TRUE(file_exists(path_join(out, "tokenizer.model")));
  EXPECT_TRUE(file_exists(path_join(out, "modeling_internlm2.py")));
  EXPECT_FALSE(file_exists(path_join(out, "pytorch_model.bin")));
  EXPECT_FALSE(file_exists(path_join(out, "training_args.bin")));
  EXPECT_FALSE(is_directory(path_join(out, "subdir")));

  // A second run into the same folder is refused; so is converting a folder into itself.
  EXPECT_XC2_ERROR(convert_checkpoint(src.path(), out, 0), InvalidArgument, "already holds");
  EXPECT_XC2_ERROR(convert_checkpoint(src.path(), src.path(), 0), InvalidArgument, "into itself");
  EXPECT_XC2_ERROR(convert_checkpoint(src.path(), src.path() + "/.", 0), InvalidArgument, "into itself");
  EXPECT_XC2_ERROR(convert_checkpoint(src.file("missing"), dst.file("x"), 0), NotFound, "does not exist");
}

TEST(Convert, ShardedBinFixtureToShards) {
  test::TempDir dst;
  convert_checkpoint(test::data_path("io/sharded"), dst.path(), 64);
  EXPECT_FALSE(file_exists(dst.file("pytorch_model.bin.index.json")));
  EXPECT_TRUE(file_exists(dst.file("model.safetensors.index.json")));
  EXPECT_TRUE(file_exists(dst.file("config.json")));
  expect_same_checkpoint(Checkpoint::open_dir(test::data_path("io/sharded")), Checkpoint::open_dir(dst.path()));
}

TEST(Convert, TinyModelBinToSafetensors) {
  const std::string bin = test::data_path("models/tiny-a-bin");
  const std::string st = test::data_path("models/tiny-a");
  if (!is_directory(bin) || !is_directory(st)) GTEST_SKIP() << "tests/data/models/tiny-a[-bin] not present";
  test::TempDir dst;
  convert_checkpoint(bin, dst.path(), size_t{3} << 20);
  const Checkpoint got = Checkpoint::open_dir(dst.path());
  EXPECT_EQ(got.files().size(), 2u);
  expect_same_checkpoint(got, Checkpoint::open_dir(st));
  expect_same_checkpoint(got, Checkpoint::open_dir(bin));
  EXPECT_EQ(read_file(dst.file("config.json")), read_file(bin + "/config.json"));
}

}  // namespace
}  // namespace xc2::io
