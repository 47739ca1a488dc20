// Checkpoint::open_dir / open_file: which files a folder resolves to, sharded indexes of both
// formats, and the tiny model checkpoints in both formats (byte-identical tensors). Oracles: files
// written here, the torch.save fixtures, and the safetensors twin of each tiny .bin checkpoint.
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/mmap_file.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "support/test_util.h"

namespace xc2::io {
namespace {

namespace fs = std::filesystem;
using iotest::make_safetensors;
using iotest::expect_same_checkpoint;
using iotest::pattern_bytes;

std::string st_file(const std::vector<std::string>& names, uint8_t seed = 0) {
  std::vector<iotest::StTensor> ts;
  for (const std::string& n : names) ts.push_back({n, "BF16", {2, 2}, pattern_bytes(8, seed++)});
  return make_safetensors(ts);
}

std::string index_json(const std::map<std::string, std::string>& weight_map) {
  std::string s = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
  bool first = true;
  for (const auto& kv : weight_map) {
    s += (first ? "" : ", ") + std::string("\"") + kv.first + "\": \"" + kv.second + "\"";
    first = false;
  }
  return s + "}}";
}

void copy_file(const std::string& from, const std::string& to) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

TEST(Checkpoint, SelectionOrder) {
  test::TempDir d;
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), NotFound,
                   "no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                   "pytorch_model.bin.index.json in '" + d.path() + "'");
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.file("nope")), NotFound, "does not exist");
  test::write_bytes(d.file("config.json"), "{}");
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.file("config.json")), InvalidArgument, "is a file");

  // training_args.bin is not a weight file.
  test::write_bytes(d.file("training_args.bin"), "junk");
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), NotFound, "no model.safetensors");

  copy_file(test::data_path("io/state_p2.bin"), d.file("pytorch_model.bin"));
  Checkpoint c1 = Checkpoint::open_dir(d.path());
  EXPECT_EQ(c1.format(), CheckpointFormat::TorchBin);
  EXPECT_EQ(c1.files(), std::vector<std::string>{d.file("pytorch_model.bin")});

  // The only *.safetensors file beats the .bin.
  test::write_bytes(d.file("weights.safetensors"), st_file({"only"}));
  Checkpoint c2 = Checkpoint::open_dir(d.path());
  EXPECT_EQ(c2.format(), CheckpointFormat::Safetensors);
  EXPECT_NE(c2.find("only"), nullptr);

  // Two loose .safetensors files without an index are ambiguous.
  test::write_bytes(d.file("other.safetensors"), st_file({"other"}));
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), Io, "holds 2 .safetensors files");

  // model.safetensors beats loose files.
  test::write_bytes(d.file("model.safetensors"), st_file({"main"}));
  EXPECT_NE(Checkpoint::open_dir(d.path()).find("main"), nullptr);

  // The index beats everything.
  test::write_bytes(d.file("model-00001-of-00001.safetensors"), st_file({"sharded"}));
  test::write_bytes(d.file("model.safetensors.index.json"), index_json({{"sharded", "model-00001-of-00001.safetensors"}}));
  const Checkpoint c3 = Checkpoint::open_dir(d.path());
  EXPECT_NE(c3.find("sharded"), nullptr);
  EXPECT_EQ(c3.tensors().size(), 1u);
}

TEST(Checkpoint, ShardedSafetensors) {
  test::TempDir d;
  test::write_bytes(d.file("model-00001-of-00002.safetensors"), st_file({"a", "b"}, 1));
  test::write_bytes(d.file("model-00002-of-00002.safetensors"), st_file({"c"}, 7));
  const std::map<std::string, std::string> wm = {{"a", "model-00001-of-00002.safetensors"},
                                                 {"b", "model-00001-of-00002.safetensors"},
                                                 {"c", "model-00002-of-00002.safetensors"}};
  test::write_bytes(d.file("model.safetensors.index.json"), index_json(wm));
  const Checkpoint ck = Checkpoint::open_dir(d.path());
  ASSERT_EQ(ck.tensors().size(), 3u);
  EXPECT_EQ(ck.files().size(), 2u);
  EXPECT_EQ(ck.find("c")->file, "model-00002-of-00002.safetensors");
  EXPECT_EQ(ck.total_bytes(), 24u);

  auto with_index = [&](const std::map<std::string, std::string>& m) {
    test::write_bytes(d.file("model.safetensors.index.json"), index_json(m));
    return Checkpoint::open_dir(d.path());
  };
  auto m = wm;
  m["d"] = "model-00003-of-00003.safetensors";
  EXPECT_XC2_ERROR(with_index(m), NotFound,
                   "model.safetensors.index.json' lists shard 'model-00003-of-00003.safetensors', which does not exist");
  m = wm;
  m["ghost"] = "model-00002-of-00002.safetensors";
  EXPECT_XC2_ERROR(with_index(m), Io,
                   "tensor 'ghost' listed in '" + d.file("model.safetensors.index.json") +
                       "' is missing from its shard 'model-00002-of-00002.safetensors'");
  m = wm;
  m.erase("b");
  EXPECT_XC2_ERROR(with_index(m), Io, "'model-00001-of-00002.safetensors': tensor 'b' is not listed in");
  m = wm;
  m["b"] = "model-00002-of-00002.safetensors";
  EXPECT_XC2_ERROR(with_index(m), Io, "tensor 'b' is listed under 'model-00002-of-00002.safetensors'");
  m = wm;
  m["a"] = "../model-00001-of-00002.safetensors";
  EXPECT_XC2_ERROR(with_index(m), Io, "names an invalid shard file '../model-00001-of-00002.safetensors'");
  EXPECT_XC2_ERROR(with_index({}), Io, "weight_map is empty");

  test::write_bytes(d.file("model.safetensors.index.json"), "{\"weight_map\": ");
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), Io, "not valid JSON");
  test::write_bytes(d.file("model.safetensors.index.json"), "{\"weight_map\": []}");
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), Io, "no \"weight_map\" object");
  test::write_bytes(d.file("model.safetensors.index.json"), "{\"weight_map\": {\"a\": 3}}");
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), Io, "weight_map entry 'a' is not a string");

  // The same name in two shards.
  test::write_bytes(d.file("model-00002-of-00002.safetensors"), st_file({"a", "c"}, 7));
  EXPECT_XC2_ERROR(with_index(wm), Io,
                   "duplicate tensor 'a' in 'model-00001-of-00002.safetensors' and 'model-00002-of-00002.safetensors'");

  // A corrupt shard names itself.
  test::write_bytes(d.file("model-00002-of-00002.safetensors"), "garbage!");
  EXPECT_XC2_ERROR(with_index(wm), Io, "'model-00002-of-00002.safetensors'");
}

TEST(Checkpoint, ShardedTorchBinFixture) {
  const Checkpoint bin = Checkpoint::open_dir(test::data_path("io/sharded"));
  EXPECT_EQ(bin.format(), CheckpointFormat::TorchBin);
  EXPECT_EQ(bin.files().size(), 2u);
  const Checkpoint ref = Checkpoint::open_file(test::data_path("io/state.safetensors"));
  expect_same_checkpoint(bin, ref);
  EXPECT_EQ(bin.find("linear.weight")->file, "pytorch_model-00001-of-00002.bin");
  EXPECT_EQ(bin.find("unit_stride")->file, "pytorch_model-00002-of-00002.bin");

  // Index pointing at a missing shard.
  test::TempDir d;
  copy_file(test::data_path("io/sharded/pytorch_model-00001-of-00002.bin"), d.file("pytorch_model-00001-of-00002.bin"));
  copy_file(test::data_path("io/sharded/pytorch_model.bin.index.json"), d.file("pytorch_model.bin.index.json"));
  EXPECT_XC2_ERROR(Checkpoint::open_dir(d.path()), NotFound,
                   "lists shard 'pytorch_model-00002-of-00002.bin', which does not exist");
}

// The tiny model checkpoints (tests/data/models, from tools/reference/make_tiny.py) in both formats.
TEST(Checkpoint, TinyModelsSameInBothFormats) {
  int compared = 0;
  for (const char* name : {"tiny-a", "tiny-b"}) {
    const std::string st = test::data_path(std::string("models/") + name);
    const std::string bin = st + "-bin";
    if (!is_directory(st) || !is_directory(bin)) continue;
    SCOPED_TRACE(name);
    const Checkpoint a = Checkpoint::open_dir(st);
    const Checkpoint b = Checkpoint::open_dir(bin);
    EXPECT_EQ(a.format(), CheckpointFormat::Safetensors);
    EXPECT_EQ(b.format(), CheckpointFormat::TorchBin);
    EXPECT_GT(a.tensors().size(), 10u);
    expect_same_checkpoint(a, b);
    ++compared;
  }
  if (compared == 0) GTEST_SKIP() << "tests/data/models/tiny-{a,b}[-bin] not present";
}

}  // namespace
}  // namespace xc2::io
