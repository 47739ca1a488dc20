// Tokenizer tests. Oracle: tests/data/golden/<model>/tokenizer.json, written by
// tools/reference/make_golden.py from xc2_ref.Tokenizer (sentencepiece + the HF slow-tokenizer rules),
// for both tiny tokenizers (tiny-a: add_dummy_prefix on, tiny-b: off). StreamDecoder is checked by
// property: the concatenated stream output equals decode(ids) and every chunk is valid UTF-8.
#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/test_util.h"
#include "text/tokenizer.h"
#include "xc2/error.h"

namespace xc2::text {
namespace {

using nlohmann::json;

json load_golden(const std::string& model) {
  const std::string path = test::data_path("golden/" + model + "/tokenizer.json");
  const std::string text = test::read_file(path);
  if (text.empty()) ADD_FAILURE() << "missing golden " << path;
  return text.empty() ? json::object() : json::parse(text);
}

std::string model_path(const std::string& model) { return test::data_path("models/" + model + "/tokenizer.model"); }

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

std::string show(const std::vector<int32_t>& ids) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < ids.size(); ++i) os << (i ? ", " : "") << ids[i];
  os << "]";
  return os.str();
}

// Whole-string UTF-8 validity (no partial sequence at either end).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids, bool* chunks_valid) {
  StreamDecoder dec(tok);
  std::string out;
  *chunks_valid = true;
  for (const int32_t id : ids) {
    const std::string piece = dec.push(id);
    if (!valid_utf8(piece)) *chunks_valid = false;
    out += piece;
  }
  const std::string rest = dec.finish();
  if (!valid_utf8(rest)) *chunks_valid = false;
  return out + rest;
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    golden_ = load_golden(GetParam());
    tok_ = Tokenizer::load(model_path(GetParam()));
  }
  json golden_;
  std::shared_ptr<Tokenizer> tok_;
};

TEST_P(TokenizerGolden, VocabularyAndPieces) {
  EXPECT_EQ(tok_->vocab_size(), golden_.at("vocab_size").get<int>());
  EXPECT_EQ(tok_->adds_dummy_prefix(), golden_.at("add_dummy_prefix").get<bool>());
  for (const auto& [piece, id] : golden_.at("pieces").items()) {
    EXPECT_EQ(tok_->piece_to_id(piece), id.get<int32_t>()) << piece;
    EXPECT_EQ(tok_->id_to_piece(id.get<int32_t>()), piece);
  }
  EXPECT_EQ(tok_->bos_id(), golden_["pieces"]["<s>"].get<int32_t>());
  EXPECT_EQ(tok_->eos_id(), golden_["pieces"]["</s>"].get<int32_t>());
  EXPECT_EQ(tok_->unk_id(), golden_["pieces"]["<unk>"].get<int32_t>());
  EXPECT_EQ(tok_->im_start_id(), golden_["pieces"]["[UNUSED_TOKEN_146]"].get<int32_t>());
  EXPECT_EQ(tok_->im_end_id(), golden_["pieces"]["[UNUSED_TOKEN_145]"].get<int32_t>());
  EXPECT_EQ(tok_->piece_to_id("[UNUSED_TOKEN_999]"), -1);
  EXPECT_EQ(tok_->piece_to_id("<unk>"), tok_->unk_id());
  EXPECT_TRUE(tok_->is_special(tok_->bos_id()));
  EXPECT_TRUE(tok_->is_special(tok_->eos_id()));
  EXPECT_TRUE(tok_->is_special(tok_->unk_id()));
  EXPECT_FALSE(tok_->is_special(tok_->im_start_id()));
  EXPECT_FALSE(tok_->is_special(tok_->im_end_id()));
}

TEST_P(TokenizerGolden, EncodeMatchesReference) {
  const json& cases = golden_.at("encode");
  ASSERT_GE(cases.size(), 50u);
  int checked = 0;
  for (const json& c : cases) {
    const std::string text = c.at("text");
    const bool add_bos = c.at("add_bos");
    EXPECT_EQ(show(tok_->encode(text, add_bos)), show(ids_of(c.at("ids"))))
        << "text '" << text << "' add_bos " << add_bos;
    ++checked;
  }
  EXPECT_GE(checked, 50);
}

TEST_P(TokenizerGolden, SingleMarkerPieces) {
  // The markers are single user-defined pieces; with add_dummy_prefix a "▁" piece comes first.
  const std::vector<int32_t> start = tok_->encode("[UNUSED_TOKEN_146]", false);
  const std::vector<int32_t> end = tok_->encode("[UNUSED_TOKEN_145]", false);
  const size_t prefix = tok_->adds_dummy_prefix() ? 1 : 0;
  ASSERT_EQ(start.size(), 1 + prefix);
  ASSERT_EQ(end.size(), 1 + prefix);
  EXPECT_EQ(start.back(), tok_->im_start_id());
  EXPECT_EQ(end.back(), tok_->im_end_id());
  if (prefix) {
    EXPECT_EQ(tok_->token_bytes(start[0]), " ");
  }
  EXPECT_EQ(tok_->encode("x[UNUSED_TOKEN_146]", false).back(), tok_->im_start_id());
  EXPECT_EQ(tok_->encode("<s>", false), std::vector<int32_t>{tok_->bos_id()});
  EXPECT_EQ(tok_->encode("", true), std::vector<int32_t>{tok_->bos_id()});
  EXPECT_TRUE(tok_->encode("", false).empty());
}

TEST_P(TokenizerGolden, DecodeMatchesReference) {
  const json& cases = golden_.at("decode");
  ASSERT_GE(cases.size(), 10u);
  for (const json& c : cases) {
    const std::vector<int32_t> ids = ids_of(c.at("ids"));
    const bool skip = c.at("skip_special_tokens");
    EXPECT_EQ(tok_->decode(ids, skip), c.at("text").get<std::string>()) << "ids " << show(ids);
  }
}

TEST_P(TokenizerGolden, DecodeRoundTripsEncodeCases) {
  // decode(encode(s)) is not s in general (dummy prefix, clean-up); it must at least not throw and be
  // valid UTF-8 whenever s is.
  for (const json& c : golden_.at("encode")) {
    const std::string text = c.at("text");
    const std::string back = tok_->decode(ids_of(c.at("ids")), true);
    if (valid_utf8(text)) {
      EXPECT_TRUE(valid_utf8(back)) << text;
    }
  }
}

TEST_P(TokenizerGolden, DecodeKeepsSpecialTokensWhenAsked) {
  const int32_t bos = tok_->bos_id(), eos = tok_->eos_id();
  const std::vector<int32_t> hello = tok_->encode("Hello", false);
  std::vector<int32_t> ids = {bos};
  ids.insert(ids.end(), hello.begin(), hello.end());
  ids.push_back(eos);
  // upstream convert_tokens_to_string: at a special token that follows a non-special one (or starts the
  // list), " " is appended *before* the decoded run that precedes the special token.
  EXPECT_EQ(tok_->decode(ids, false), " <s> Hello</s>");
  EXPECT_EQ(tok_->decode(ids, true), "Hello");
  EXPECT_EQ(tok_->decode({bos, bos}, false), " <s><s>");
  EXPECT_EQ(tok_->decode({}, false), "");
}

TEST_P(TokenizerGolden, DecodeRejectsOutOfRangeIds) {
  try {
    tok_->decode({tok_->vocab_size()});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
  }
  EXPECT_THROW(tok_->decode({-1}), Error);
  EXPECT_THROW(tok_->id_to_piece(tok_->vocab_size()), Error);
  StreamDecoder dec(*tok_);
  EXPECT_THROW(dec.push(tok_->vocab_size()), Error);
}

TEST_P(TokenizerGolden, TokenBytes) {
  EXPECT_EQ(tok_->token_bytes(tok_->bos_id()), "");
  EXPECT_EQ(tok_->token_bytes(tok_->eos_id()), "");
  EXPECT_EQ(tok_->token_bytes(tok_->unk_id()), "");
  EXPECT_EQ(tok_->token_bytes(tok_->im_end_id()), "[UNUSED_TOKEN_145]");
  EXPECT_EQ(tok_->token_bytes(golden_["pieces"]["<0x0A>"].get<int32_t>()), "\n");
  EXPECT_EQ(tok_->token_bytes(golden_["pieces"]["<0x00>"].get<int32_t>()), std::string(1, '\0'));
  EXPECT_EQ(tok_->token_bytes(golden_["pieces"]["<0xFF>"].get<int32_t>()), "\xFF");
  const int32_t space = tok_->piece_to_id("\xE2\x96\x81");
  if (space >= 0) {
    EXPECT_EQ(tok_->token_bytes(space), " ");
  }
  // The bytes of an encoded string spell it (plus the dummy prefix) when no clean-up rule applies.
  for (const std::string s : {"Hello world", "请详细描述这张图片。", "I love pizza 🍕", "tab\tx\ny"}) {
    std::string joined;
    for (const int32_t id : tok_->encode(s, true)) joined += tok_->token_bytes(id);
    EXPECT_EQ(joined, (tok_->adds_dummy_prefix() ? " " : "") + s);
  }
}

TEST_P(TokenizerGolden, StreamDecoderEqualsDecodeOnGoldenCases) {
  for (const json& c : golden_.at("encode")) {
    const std::vector<int32_t> ids = ids_of(c.at("ids"));
    bool valid = true;
    EXPECT_EQ(stream_all(*tok_, ids, &valid), tok_->decode(ids, true)) << "text '" << c.at("text") << "'";
    EXPECT_TRUE(valid) << "text '" << c.at("text") << "'";
  }
  for (const json& c : golden_.at("decode")) {
    const std::vector<int32_t> ids = ids_of(c.at("ids"));
    bool valid = true;
    EXPECT_EQ(stream_all(*tok_, ids, &valid), c.at("text").get<std::string>()) << show(ids);
  }
}

TEST_P(TokenizerGolden, StreamDecoderHoldsPartialUtf8) {
  // "🦜" is four byte-fallback pieces: nothing may come out until the last one.
  const std::vector<int32_t> ids = tok_->encode("🦜", false);
  std::vector<int32_t> bytes;
  for (const int32_t id : ids) {
    if (tok_->id_to_piece(id).rfind("<0x", 0) == 0) bytes.push_back(id);
  }
  ASSERT_EQ(bytes.size(), 4u);
  StreamDecoder dec(*tok_);
  EXPECT_EQ(dec.push(bytes[0]), "");
  EXPECT_EQ(dec.push(bytes[1]), "");
  EXPECT_EQ(dec.push(bytes[2]), "");
  EXPECT_EQ(dec.push(bytes[3]), "🦜");
  EXPECT_EQ(dec.finish(), "");
  // A sequence cut short is flushed by finish() exactly as decode renders it.
  StreamDecoder dec2(*tok_);
  std::string out = dec2.push(bytes[0]);
  out += dec2.push(bytes[1]);
  EXPECT_EQ(out, "");
  EXPECT_EQ(dec2.finish(), tok_->decode({bytes[0], bytes[1]}));
}

TEST_P(TokenizerGolden, StreamDecoderRandomSequences) {
  // Random ids over the whole vocabulary, and random text built from clean-up-sensitive pieces, emoji
  // and Chinese (byte fallback), so that holds of both kinds are exercised.
  std::mt19937 rng(1234);
  const int vocab = tok_->vocab_size();
  std::vector<int32_t> tricky;
  for (const std::string s : {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're", " n", "'",
                              "t", " ", "  ", "a", "🦜", "浦语", "é", "\n"}) {
    for (const int32_t id : tok_->encode(s, false)) tricky.push_back(id);
  }
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<int32_t> ids;
    const int len = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) {
      ids.push_back(iter % 2 == 0 ? static_cast<int32_t>(rng() % vocab) : tricky[rng() % tricky.size()]);
    }
    bool valid = true;
    ASSERT_EQ(stream_all(*tok_, ids, &valid), tok_->decode(ids, true)) << show(ids);
    ASSERT_TRUE(valid) << show(ids);
  }
}

TEST_P(TokenizerGolden, StreamDecoderIsReusableAfterFinish) {
  StreamDecoder dec(*tok_);
  std::string a;
  for (const int32_t id : tok_->encode("Hello world", true)) a += dec.push(id);
  a += dec.finish();
  std::string b;
  for (const int32_t id : tok_->encode("Hello world", true)) b += dec.push(id);
  b += dec.finish();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, tok_->decode(tok_->encode("Hello world", true)));
}

INSTANTIATE_TEST_SUITE_P(Tiny, TokenizerGolden, ::testing::Values("tiny-a", "tiny-b"));

// ------------------------------------------------------------------------------------------------
// Loading errors

using test::catch_error;

TEST(TokenizerLoad, MissingFileIsNotFound) {
  const Error e = catch_error([] { Tokenizer::load("/nonexistent/dir/tokenizer.model"); });
  EXPECT_EQ(e.code(), ErrorCode::NotFound);
  EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.model"), std::string::npos) << e.what();
}

TEST(TokenizerLoad, DirectoryIsIo) {
  const Error e = catch_error([] { Tokenizer::load(test::data_path("models/tiny-a")); });
  EXPECT_EQ(e.code(), ErrorCode::Io);
}

TEST(TokenizerLoad, NotAModelIsIo) {
  test::TempDir dir;
  test::write_bytes(dir.file("tokenizer.model"), "this is not a sentencepiece model\n");
  const Error e = catch_error([&] { Tokenizer::load(dir.file("tokenizer.model")); });
  EXPECT_EQ(e.code(), ErrorCode::Io);
  EXPECT_NE(std::string(e.what()).find("not a valid SentencePiece model"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find(dir.file("tokenizer.model")), std::string::npos) << e.what();
  // A PNG, and an empty file.
  EXPECT_EQ(catch_error([] { Tokenizer::load(test::data_path("images/rgb_64x48.png")); }).code(), ErrorCode::Io);
  test::write_bytes(dir.file("empty.model"), "");
  EXPECT_EQ(catch_error([&] { Tokenizer::load(dir.file("empty.model")); }).code(), ErrorCode::Io);
}

TEST(TokenizerLoad, TruncatedModelIsIo) {
  const std::string bytes = test::read_file(model_path("tiny-a"));
  ASSERT_GT(bytes.size(), 1000u);
  test::TempDir dir;
  for (const size_t cut : {size_t{1}, size_t{17}, bytes.size() / 2, bytes.size() - 3}) {
    test::write_bytes(dir.file("t.model"), bytes.substr(0, cut));
    EXPECT_EQ(catch_error([&] { Tokenizer::load(dir.file("t.model")); }).code(), ErrorCode::Io) << cut;
  }
}

TEST(TokenizerLoad, ModelWithoutChatMarkersIsUnsupported) {
  // Rename the [UNUSED_TOKEN_146] piece in the serialized model (same length, so the protobuf stays valid).
  std::string bytes = test::read_file(model_path("tiny-a"));
  const size_t at = bytes.find("[UNUSED_TOKEN_146]");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 18, "[UNUSED_TOKEN_999]");
  test::TempDir dir;
  test::write_bytes(dir.file("tokenizer.model"), bytes);
  const Error e = catch_error([&] { Tokenizer::load(dir.file("tokenizer.model")); });
  EXPECT_EQ(e.code(), ErrorCode::Unsupported);
  EXPECT_NE(std::string(e.what()).find("[UNUSED_TOKEN_146]"), std::string::npos) << e.what();
}

// Inputs the fuzzer (tests/fuzz, tools/fuzz.sh) found to crash xc2, kept as regression cases: each must be
// refused with an xc2::Error naming the file.
TEST(TokenizerFuzzRegressions, MalformedModelsAreErrors) {
  // A model with an empty piece: libsentencepiece's trie builder throws its own exception type.
  const std::string path = test::data_path("fuzz/tokenizer-empty-piece.model");
  const Error e = catch_error([&] { Tokenizer::load(path); });
  EXPECT_EQ(e.code(), ErrorCode::Io);
  EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
}

}  // namespace
}  // namespace xc2::text
