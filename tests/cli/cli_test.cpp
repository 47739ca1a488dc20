// The xc2 binary end to end on the tiny checkpoints: chat (one-shot JSON against the reference's greedy
// tokens; an interactive session through stdin), caption (bad files, resume after a kill, shards),
// logits against the golden logits, help texts and exit codes.
// Oracles: the PyTorch reference's goldens (tests/data/golden) and the library's own ChatSession.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "io/checkpoint.h"
#include "cli/cli_helpers.h"
#include "support/process.h"
#include "support/test_util.h"
#include "xc2/engine.h"

namespace xc2 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using namespace clitest;


json golden_case(const std::string& m, const std::string& c) {
  std::ifstream in(test::data_path("golden/" + m + "/case_" + c + ".json"));
  return json::parse(in);
}


// The reference's greedy tokens without the trailing stop token (xc2 reports it as stop_reason).
std::vector<int32_t> golden_answer(const json& c) {
  std::vector<int32_t> t = c["greedy"]["tokens"].get<std::vector<int32_t>>();
  if (t.size() < 64u) t.pop_back();
  return t;
}

TEST(CliChat, OneShotGreedyJsonEqualsReference) {
  {
    const json c = golden_case("tiny-a", "img1");
    const auto r = xc2({"chat", "--model", model("tiny-a"), "--image", test::data_path(c["images"][0]), "--greedy",
                        "--format", "json", "-n", "64", c["query"].get<std::string>()});
    ASSERT_EQ(r.status, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), golden_answer(c));
    EXPECT_EQ(j["prompt_positions"].get<int64_t>(), c["n_positions"].get<int64_t>());
    EXPECT_EQ(j["text"].get<std::string>(), c["greedy"]["text"].get<std::string>());
  }
  {
    const json c = golden_case("tiny-b", "text");
    const auto r = xc2({"chat", "--model", model("tiny-b-bin"), "--greedy", "--format", "json", "-n", "64",
                        c["query"].get<std::string>()});
    ASSERT_EQ(r.status, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), golden_answer(c));
    EXPECT_EQ(j["stop_reason"].get<std::string>(), c["greedy"]["tokens"].back() == 2 ? "eos" : "im_end");
  }
}

// --beams N through the CLI equals the reference's beam search (tools/reference/make_beam_goldens.py), and the
// JSON carries the answer's score; sampling with beams is a usage error.
TEST(CliChat, BeamsEqualReference) {
  const json c = golden_case("tiny-b", "text");
  ASSERT_EQ(c["system"].get<std::string>(), default_system_prompt());
  std::ifstream in(test::data_path("golden/tiny-b/beams.json"));
  const json beams = json::parse(in);
  for (const json& g : beams) {
    if (g["case"] != "text" || g["num_beams"] != 3 || g["repetition_penalty"] != 1.005 || g["length_penalty"] != 1.0 ||
        !g["extra_stops"].empty())
      continue;
    const auto r = xc2({"chat", "--model", model("tiny-b"), "--beams", "3", "-n", "20", "--format", "json",
                        c["query"].get<std::string>()});
    ASSERT_EQ(r.status, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), g["tokens"].get<std::vector<int32_t>>());
    EXPECT_NEAR(j["beam_score"].get<double>(), g["score"].get<double>(), 1e-5);
  }
  const auto bad = xc2({"caption", "--model", model("tiny-b"), "--beams", "2", "--sample", image("rgb_64x48.png")});
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_NE(bad.err.find("--beams"), std::string::npos) << bad.err;
}

TEST(CliChat, StreamsTextAndStats) {
  const json c = golden_case("tiny-a", "img1");
  const auto r = xc2({"chat", "--model", model("tiny-a"), "-i", test::data_path(c["images"][0]), "--greedy", "--stats",
                      "-n", "64", c["query"].get<std::string>()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, c["greedy"]["text"].get<std::string>() + "\n");
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
}

TEST(CliChat, InteractiveSessionThroughStdinKeepsHistory) {
  const std::string q1 = "Hello, who are you?", q2 = "And what can you do?";
  const auto r = xc2({"chat", "--model", model("tiny-a"), "--greedy", "--format", "json", "-n", "6", "--ignore-eos",
                      "--no-system"},
                     q1 + "\n\n" + q2 + "\n");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto out = lines_of(r.out);
  ASSERT_EQ(out.size(), 2u) << r.out;
  const auto t2 = json::parse(out[1])["tokens"].get<std::vector<int32_t>>();

  // The same two turns through the library's ChatSession.
  EngineOptions eo;
  eo.model_dir = model("tiny-a");
  eo.device = DeviceChoice::Cpu;
  auto engine = Engine::load(eo);
  GenerationOptions o;
  o.do_sample = false;
  o.max_new_tokens = 6;
  o.ignore_eos = true;
  auto chat = engine->new_chat(std::string());
  const auto a1 = chat->ask(q1, {}, o);
  EXPECT_EQ(json::parse(out[0])["tokens"].get<std::vector<int32_t>>(), a1.tokens);
  EXPECT_EQ(t2, chat->ask(q2, {}, o).tokens);
  // Without the first turn the second answer differs: the history was used.
  const auto alone = xc2({"chat", "--model", model("tiny-a"), "--greedy", "--format", "json", "-n", "6",
                          "--ignore-eos", "--no-system", q2});
  ASSERT_EQ(alone.status, 0) << alone.err;
  EXPECT_NE(json::parse(alone.out)["tokens"].get<std::vector<int32_t>>(), t2);
}

TEST(CliChat, ImageCommandAndResetInSession) {
  const auto r = xc2({"chat", "--model", model("tiny-b"), "--greedy", "-n", "4", "--format", "json"},
                     "/image " + image("rgb_64x48.png") + "\nWhat is this?\n/reset\n/image " +
                         image("not_an_image.png") + "\nAnd this?\nHello\n/exit\nnever read\n");
  // The bad image is refused when attached (exit 1 at the end); every message is answered.
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(lines_of(r.out).size(), 3u) << r.out;
  EXPECT_NE(r.err.find("not_an_image.png"), std::string::npos) << r.err;
}

class CliCaption : public testing::Test {
 protected:
  test::TempDir tmp_;
  std::string dir() const { return tmp_.path() + "/imgs"; }
  void make_folder() {
    fs::create_directories(dir() + "/sub");
    fs::copy_file(image("rgb_64x48.png"), dir() + "/a_good.png");
    fs::copy_file(image("lossless_32x24.webp"), dir() + "/b_good.webp");
    fs::copy_file(image("corrupt.png"), dir() + "/c_corrupt.png");
    test::write_bytes(dir() + "/d_text.png", "this is a text file, not a PNG\n");
    test::write_bytes(dir() + "/notes.txt", "not an image name\n");
    fs::copy_file(image("odd_37x23.png"), dir() + "/sub/e_good.png");
  }
};

TEST_F(CliCaption, BadFilesGetErrorRecordsAndTheBatchGoesOn) {
  make_folder();
  const std::string out = tmp_.path() + "/caps.jsonl";
  const auto r = xc2({"caption", "--model", model("tiny-a"), dir(), "--out", out, "-n", "8"});
  EXPECT_EQ(r.status, 1) << r.err;  // partial failure
  std::map<std::string, json> recs;
  for (const auto& l : lines_of(test::read_file(out))) {
    const json j = json::parse(l);
    recs[fs::path(j["path"].get<std::string>()).filename().string()] = j;
  }
  ASSERT_EQ(recs.size(), 4u);  // no notes.txt, no sub/ without --recursive
  EXPECT_TRUE(recs["a_good.png"].contains("caption"));
  EXPECT_TRUE(recs["b_good.webp"].contains("caption"));
  EXPECT_GT(recs["a_good.png"]["generated_tokens"].get<int>(), 0);
  EXPECT_TRUE(recs["a_good.png"].contains("ms"));
  EXPECT_TRUE(recs["c_corrupt.png"].contains("error"));
  EXPECT_NE(recs["c_corrupt.png"]["error"].get<std::string>().find("c_corrupt.png"), std::string::npos);
  EXPECT_TRUE(recs["d_text.png"].contains("error"));

}

// --batch-size N decodes N captions together: the records (all but the timing) are those of N = 1, in the
// same order, bad files included, whatever N and however the batches fall.
TEST_F(CliCaption, BatchedCaptionsEqualOneAtATime) {
  make_folder();
  for (int i = 0; i < 3; ++i) fs::copy_file(image("photo_48x40.jpg"), dir() + "/f" + std::to_string(i) + ".jpg");
  auto without_ms = [](const std::string& out) {
    std::vector<json> v;
    for (const auto& l : lines_of(out)) {
      json j = json::parse(l);
      j.erase("ms");
      v.push_back(j);
    }
    return v;
  };
  for (const std::string m : {"tiny-a", "tiny-b"}) {
    SCOPED_TRACE(m);
    const auto one = xc2({"caption", "--model", model(m), "--recursive", dir(), "-n", "10"});
    EXPECT_EQ(one.status, 1) << one.err;
    const std::vector<json> want = without_ms(one.out);
    ASSERT_EQ(want.size(), 8u) << one.out;
    for (const std::string bs : {"3", "8"}) {
      SCOPED_TRACE("batch " + bs);
      const auto r = xc2({"caption", "--model", model(m), "--recursive", dir(), "-n", "10", "--batch-size", bs});
      EXPECT_EQ(r.status, 1) << r.err;
      EXPECT_EQ(without_ms(r.out), want) << r.out;
    }
  }
}

TEST_F(CliCaption, ResumeAfterKillRedoesNothingFinished) {
  fs::create_directories(dir());
  const int n = 16;
  for (int i = 0; i < n; ++i) fs::copy_file(image("rgb_64x48.png"), dir() + "/img" + std::to_string(100 + i) + ".png");
  const std::string out = tmp_.path() + "/caps.jsonl";
  const std::vector<std::string> args = {kExe, "caption", "--model", model("tiny-a"), dir(), "--out", out, "-n", "200",
                                         "--ignore-eos"};
  const pid_t pid = test::spawn_process(args, tmp_.path() + "/o.txt", tmp_.path() + "/e.txt");
  // Wait for a few finished records, then kill it hard.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines_of(test::read_file(out)).size() < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  test::wait_process(pid);
  const std::string before = test::read_file(out);
  std::vector<std::string> done_before = lines_of(before);
  ASSERT_GE(done_before.size(), 3u);
  ASSERT_LT(done_before.size(), static_cast<size_t>(n)) << "the run finished before it could be killed";
  // Simulate a torn last line too.
  { std::ofstream(out, std::ios::app) << "{\"path\": \"" << dir() << "/img1"; }

  const auto r = xc2({"caption", "--model", model("tiny-a"), dir(), "--out", out, "-n", "200", "--ignore-eos",
                      "--resume"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto after = lines_of(test::read_file(out));
  ASSERT_EQ(after.size(), static_cast<size_t>(n));
  // Finished records are kept byte for byte, in order, and nothing is captioned twice.
  for (size_t i = 0; i < done_before.size(); ++i) EXPECT_EQ(after[i], done_before[i]);
  std::set<std::string> paths;
  for (const auto& l : after) {
    const json j = json::parse(l);
    EXPECT_TRUE(j.contains("caption"));
    EXPECT_TRUE(paths.insert(j["path"].get<std::string>()).second) << "captioned twice: " << j["path"];
  }
  EXPECT_NE(r.err.find("resuming: " + std::to_string(done_before.size()) + " of " + std::to_string(n)),
            std::string::npos)
      << r.err;
}

TEST_F(CliCaption, ShardsCoverTheListExactlyOnce) {
  fs::create_directories(dir());
  std::vector<std::string> list;
  for (const std::string name : {"rgb_64x48.png", "odd_37x23.png", "gray_33x20.png", "palette_30x30.png",
                                 "rgba_40x30.png", "lossy_32x24.webp", "rgb_45x31.bmp"})
    list.push_back(image(name));
  {
    std::ofstream l(tmp_.path() + "/list.txt");
    for (const auto& p : list) l << p << "\n";
  }
  std::multiset<std::string> seen;
  for (int k = 1; k <= 3; ++k) {
    const auto r = xc2({"caption", "--model", model("tiny-b"), "--list", tmp_.path() + "/list.txt", "--shard",
                        std::to_string(k) + "/3", "-n", "2"});
    ASSERT_EQ(r.status, 0) << r.err;
    const auto recs = lines_of(r.out);
    EXPECT_GE(recs.size(), 2u);
    for (const auto& l : recs) seen.insert(json::parse(l)["path"].get<std::string>());
  }
  EXPECT_EQ(seen, std::multiset<std::string>(list.begin(), list.end()));
  EXPECT_EQ(xc2({"caption", "--model", model("tiny-b"), "--shard", "4/3", image("rgb_64x48.png")}).status, 2);
  EXPECT_EQ(xc2({"caption", "--model", model("tiny-b"), "--shard", "x", image("rgb_64x48.png")}).status, 2);
}

std::vector<float> read_npy_f32(const std::string& path, int64_t& rows, int64_t& cols) {
  const std::string b = test::read_file(path);
  EXPECT_EQ(b.substr(0, 6), "\x93NUMPY");
  const size_t hlen = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
  const std::string header = b.substr(10, hlen);
  EXPECT_NE(header.find("'<f4'"), std::string::npos) << header;
  const size_t lp = header.find('('), comma = header.find(',', lp), rp = header.find(')', lp);
  rows = std::stoll(header.substr(lp + 1, comma - lp - 1));
  cols = std::stoll(header.substr(comma + 1, rp - comma - 1));
  EXPECT_EQ((10 + hlen) % 64, 0u);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  std::memcpy(v.data(), b.data() + 10 + hlen, v.size() * 4);
  return v;
}

TEST(CliLogits, EqualGoldenLogits) {
  for (const auto& [m, c] : std::vector<std::pair<std::string, std::string>>{{"tiny-a", "img2"}, {"tiny-b", "text"}}) {
    SCOPED_TRACE(m + "/" + c);
    const json g = golden_case(m, c);
    test::TempDir tmp;
    std::vector<std::string> args = {"logits", "--model", model(m), g["query"].get<std::string>(), "--out",
                                     tmp.file("l.npy"), "--tokens-out", tmp.file("t.json")};
    if (g["system"].get<std::string>().empty()) args.push_back("--no-system");
    else ASSERT_EQ(g["system"].get<std::string>(), default_system_prompt());
    for (const auto& im : g["images"]) args.insert(args.end(), {"--image", test::data_path(im.get<std::string>())});
    const auto r = xc2(args);
    ASSERT_EQ(r.status, 0) << r.err;
    int64_t rows = 0, cols = 0;
    const std::vector<float> got = read_npy_f32(tmp.file("l.npy"), rows, cols);
    const io::Checkpoint gold =
        io::Checkpoint::open_file(test::data_path("golden/" + m + "/case_" + c + ".safetensors"));
    const io::TensorView* want = gold.find("logits");
    ASSERT_NE(want, nullptr);
    ASSERT_EQ(want->shape, (std::vector<int64_t>{rows, cols}));
    const auto rep = test::compare_rel_l2(got.data(), static_cast<const float*>(want->data), rows * cols, 1e-5);
    EXPECT_TRUE(rep.ok) << rep.detail;
    const json toks = json::parse(test::read_file(tmp.file("t.json")));
    std::vector<int32_t> ids;
    for (const auto& t : toks) ids.push_back(t.is_null() ? -1 : t.get<int32_t>());
    EXPECT_EQ(ids, g["tokens"].get<std::vector<int32_t>>());
  }
}

// --dump writes every named intermediate; the input rows, each layer's output and the logits equal the reference's
// hidden states and logits (the goldens), and every layer has all twelve stages with their shapes.
TEST(CliLogits, DumpWritesEveryStageOfEveryLayer) {
  const json g = golden_case("tiny-a", "img2");
  test::TempDir tmp;
  const std::string dir = tmp.file("dump");
  std::vector<std::string> args = {"logits", "--model", model("tiny-a"), g["query"].get<std::string>(), "--out",
                                   tmp.file("l.npy"), "--dump", dir};
  if (g["system"].get<std::string>().empty()) args.push_back("--no-system");
  for (const auto& im : g["images"]) args.insert(args.end(), {"--image", test::data_path(im.get<std::string>())});
  const auto r = xc2(args);
  ASSERT_EQ(r.status, 0) << r.err;
  const io::Checkpoint gold = io::Checkpoint::open_file(test::data_path("golden/tiny-a/case_img2.safetensors"));
  auto expect_golden = [&](const std::string& file, const std::string& tensor) {
    SCOPED_TRACE(file);
    int64_t rows = 0, cols = 0;
    const std::vector<float> got = read_npy_f32(dir + "/" + file, rows, cols);
    const io::TensorView* want = gold.find(tensor);
    ASSERT_NE(want, nullptr);
    ASSERT_EQ(want->numel(), rows * cols);
    const auto rep = test::compare_rel_l2(got.data(), static_cast<const float*>(want->data), rows * cols, 1e-5);
    EXPECT_TRUE(rep.ok) << rep.detail;
  };
  expect_golden("input.npy", "hidden_0");
  expect_golden("layer00.layer_out.npy", "hidden_1");
  expect_golden("layer01.layer_out.npy", "hidden_2");
  expect_golden("logits.npy", "logits");
  EXPECT_EQ(test::read_file(dir + "/logits.npy"), test::read_file(tmp.file("l.npy")));
  const std::vector<std::string> stages = {"attn_norm", "qkv",      "q_rope",  "attn_out", "attn_proj", "ffn_inp",
                                           "ffn_norm",  "ffn_gate", "ffn_up",  "ffn_act",  "ffn_out",   "layer_out"};
  int64_t positions = 0, cols = 0;
  read_npy_f32(dir + "/input.npy", positions, cols);
  for (const std::string layer : {"layer00.", "layer01."})
    for (const std::string& stage : stages) {
      int64_t rows = 0;
      read_npy_f32(dir + "/" + layer + stage + ".npy", rows, cols);
      EXPECT_EQ(rows, positions) << layer << stage;
    }
  EXPECT_FALSE(fs::exists(dir + "/layer02.layer_out.npy"));
}

TEST(CliLogits, HugePageWeightCopiesGiveTheSameBits) {
  // XC2_CPU_HUGEPAGES=0 reads every weight from the mapped checkpoint, =1 copies every weight out of it,
  // unset lets the backend choose (src/backends/cpu_backend.cpp); the logits must be bit-identical, for both
  // formats. `-v` names the placement in the backend description.
  for (const std::string m : {"tiny-a", "tiny-a-bin"}) {
    SCOPED_TRACE(m);
    test::TempDir tmp;
    const std::vector<std::string> tail = {"logits", "-v", "--model", model(m), "--image", image("rgb_64x48.png"),
                                           "Describe the picture."};
    std::vector<std::string> outs;
    for (const std::string setting : {"XC2_CPU_HUGEPAGES=0", "XC2_CPU_HUGEPAGES=1", "XC2_CPU_HUGEPAGES="}) {
      SCOPED_TRACE(setting);
      const std::string out = tmp.file(std::to_string(outs.size()) + ".npy");
      std::vector<std::string> args = {"/usr/bin/env", setting, kExe};
      args.insert(args.end(), tail.begin(), tail.end());
      args.insert(args.end(), {"--out", out});
      const auto r = test::run_process(args);
      ASSERT_EQ(r.status, 0) << r.err;
      const bool copied = r.err.find("of weights in huge pages") != std::string::npos;
      if (setting == "XC2_CPU_HUGEPAGES=0") {
        EXPECT_FALSE(copied) << r.err;
      } else if (setting == "XC2_CPU_HUGEPAGES=1") {
        EXPECT_TRUE(copied) << r.err;
      }
      outs.push_back(test::read_file(out));
    }
    EXPECT_GT(outs[0].size(), 1000u);
    EXPECT_TRUE(outs[1] == outs[0]);
    EXPECT_TRUE(outs[2] == outs[0]);
  }
}

TEST(CliExitCodes, UsageModelAndInputErrors) {
  EXPECT_EQ(xc2({"--version"}).status, 0);
  EXPECT_EQ(xc2({}).status, 2);
  EXPECT_EQ(xc2({"chat", "--no-such-flag"}).status, 2);
  EXPECT_EQ(xc2({"chat", "--model", model("tiny-b"), "--temperature", "-1", "x"}).status, 2);
  const auto missing_model = xc2({"chat", "--model", "/nonexistent/model", "hi"});
  EXPECT_EQ(missing_model.status, 3);
  EXPECT_EQ(missing_model.err.rfind("xc2: error: ", 0), 0u) << missing_model.err;
  EXPECT_NE(missing_model.err.find("/nonexistent/model"), std::string::npos);
  const auto missing_image = xc2({"chat", "--model", model("tiny-b"), "--image", "/nonexistent.png", "hi"});
  EXPECT_EQ(missing_image.status, 2);
  EXPECT_NE(missing_image.err.find("/nonexistent.png"), std::string::npos) << missing_image.err;
  const auto markers = xc2({"chat", "--model", model("tiny-b"), "--image", image("rgb_64x48.png"),
                            "<ImageHere> and <ImageHere>"});
  EXPECT_EQ(markers.status, 2);
  EXPECT_NE(markers.err.find("2 <ImageHere> markers"), std::string::npos) << markers.err;

  test::TempDir tmp;
  fs::copy_file(model("tiny-b") + "/tokenizer.model", tmp.file("tokenizer.model"));
  test::write_bytes(tmp.file("config.json"), "{\"model_type\": \"internlmxcomposer2\", ");
  const auto bad_config = xc2({"chat", "--model", tmp.path(), "hi"});
  EXPECT_EQ(bad_config.status, 3);
  EXPECT_NE(bad_config.err.find("config.json"), std::string::npos) << bad_config.err;
  EXPECT_EQ(xc2({"info", "--model", tmp.path()}).status, 3);
}

TEST(CliHelp, EveryCommandHasExamples) {
  for (const std::string cmd : {"chat", "caption", "compose", "logits", "info", "convert", "bench"}) {
    const auto r = xc2({cmd, "--help"});
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_NE(r.out.find("Examples"), std::string::npos) << cmd;
  }
  const auto top = xc2({"--help"});
  EXPECT_EQ(top.status, 0);
  EXPECT_NE(top.out.find("Exit codes"), std::string::npos);
}

TEST(CliInfoConvert, InfoBothFormatsAndConvertRoundTrip) {
  const auto a = xc2({"info", "--model", model("tiny-a-bin"), "--check", "--format", "json"});
  ASSERT_EQ(a.status, 0) << a.err;
  const json j = json::parse(a.out);
  EXPECT_EQ(j["format"], "pytorch");
  EXPECT_EQ(j["visual_tokens"], 16);
  test::TempDir tmp;
  const auto c = xc2({"convert", "--model", model("tiny-a-bin"), "--out", tmp.file("st"), "--shard-size", "2MB"});
  ASSERT_EQ(c.status, 0) << c.err;
  const auto b = xc2({"info", "--model", tmp.file("st"), "--check", "--format", "json"});
  ASSERT_EQ(b.status, 0) << b.err;
  const json k = json::parse(b.out);
  EXPECT_EQ(k["format"], "safetensors");
  EXPECT_GT(k["files"].get<int>(), 1);
  EXPECT_EQ(k["tensors"], j["tensors"]);
  EXPECT_EQ(k["bytes"], j["bytes"]);
  // The converted model answers exactly like the original.
  const auto x = xc2({"chat", "--model", model("tiny-a-bin"), "--greedy", "--format", "json", "-n", "8", "hi"});
  const auto y = xc2({"chat", "--model", tmp.file("st"), "--greedy", "--format", "json", "-n", "8", "hi"});
  EXPECT_EQ(json::parse(x.out)["tokens"], json::parse(y.out)["tokens"]);
}

TEST(CliQuantize, FolderWithTheOutputHeadQuantized) {
  // xc2 quantize on a 16-bit folder: W4 decoder linears, 8-bit output head. info reports both and the smaller
  // bytes per token; the folder loads and answers; an unsupported --head-bits is a usage error.
  test::TempDir tmp;
  const auto q = xc2({"quantize", "--model", model("tiny-a"), "--out", tmp.file("w4h8"), "--bits", "4", "--group-size",
                      "32", "--head-bits", "8", "-q"});
  ASSERT_EQ(q.status, 0) << q.err;
  const auto a = xc2({"info", "--model", model("tiny-a"), "--format", "json"});
  const auto b = xc2({"info", "--model", tmp.file("w4h8"), "--check", "--format", "json"});
  ASSERT_EQ(b.status, 0) << b.err;
  const json i16 = json::parse(a.out), iq = json::parse(b.out);
  EXPECT_EQ(iq["quant_bits"], 4);
  EXPECT_EQ(iq["quant_head_bits"], 8);
  EXPECT_EQ(i16["quant_head_bits"], 0);
  EXPECT_LT(iq["decode_bytes_per_token"].get<int64_t>(), i16["decode_bytes_per_token"].get<int64_t>() / 2);
  const auto h = xc2({"info", "--model", tmp.file("w4h8")});
  EXPECT_NE(h.out.find("decoder linears and the output head (8-bit)"), std::string::npos) << h.out;
  for (const char* path : {"--exact", "--device=cpu"}) {
    const auto c = xc2({"chat", "--model", tmp.file("w4h8"), path, "--greedy", "--format", "json", "-n", "8",
                        "--ignore-eos", "hi"});
    ASSERT_EQ(c.status, 0) << c.err;
    EXPECT_EQ(json::parse(c.out)["generated_tokens"], 8);
  }
  const auto bad = xc2({"quantize", "--model", model("tiny-a"), "--out", tmp.file("bad"), "--head-bits", "3"});
  EXPECT_EQ(bad.status, 2);
}

}  // namespace
}  // namespace xc2
