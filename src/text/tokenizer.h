// The InternLM-XComposer2 tokenizer: SentencePiece (BPE, byte fallback) from the folder's
// tokenizer.model, with the special-token handling of the upstream slow tokenizer (model-spec §9):
//   - `<s>`, `</s>`, `<unk>` written in the text are split out and mapped to their ids; each remaining
//     chunk is SentencePiece-encoded on its own;
//   - `[UNUSED_TOKEN_146]` / `[UNUSED_TOKEN_145]` are ordinary (user-defined) pieces, looked up by
//     their strings, never by hard-coded ids.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace xc2::text {

// A byte range [begin, end) of a text.
struct TextSpan {
  size_t begin = 0, end = 0;
};

class Tokenizer {
 public:
  // Error{NotFound} if missing, Error{Io} if not a valid SentencePiece model, Error{Unsupported}
  // if it lacks the chat markers.
  static std::shared_ptr<Tokenizer> load(const std::string& tokenizer_model_path);
  ~Tokenizer();

  // HF `tokenizer(text)` semantics: [bos] (if add_bos) + ids of the chunks.
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const;
  // The same, except that the `plain` byte ranges of text (the user's text inside a template) are text only:
  // `<s>`, `</s>`, `<unk>` there are not split out, and a chat marker or other `[UNUSED_TOKEN_*]` piece that
  // SentencePiece matches there is replaced by the byte pieces of its text (which decode to the same text).
  // Without such strings in the plain ranges, the ids are those of encode(text, add_bos).
  std::vector<int32_t> encode(const std::string& text, bool add_bos, const std::vector<TextSpan>& plain) const;
  // HF `decode(ids, skip_special_tokens)`: skip drops <s>, </s>, <unk> (not the chat markers).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = true) const;

  int32_t bos_id() const;     // <s>
  int32_t eos_id() const;     // </s>
  int32_t unk_id() const;     // <unk>
  int32_t im_start_id() const;  // [UNUSED_TOKEN_146]
  int32_t im_end_id() const;    // [UNUSED_TOKEN_145]
  int32_t piece_to_id(const std::string& piece) const;  // -1 if the piece is not in the vocabulary
  std::string id_to_piece(int32_t id) const;
  int vocab_size() const;
  bool is_special(int32_t id) const;  // <s>, </s>, <unk>
  // Raw bytes a token contributes to decoded text ("▁" -> ' ', <0xNN> -> byte NN, control -> "").
  std::string token_bytes(int32_t id) const;
  bool adds_dummy_prefix() const;  // the model's normalizer adds a leading "▁" to each chunk

 private:
  friend class StreamDecoder;
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Incremental decoding for streaming: push() returns the text that became complete, never a partial
// UTF-8 sequence; finish() flushes what is left (invalid bytes become U+FFFD). The concatenated
// output equals Tokenizer::decode(all ids, true) for every id sequence.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer);
  std::string push(int32_t id);
  std::string finish();

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of the decoded text already returned
};

}  // namespace xc2::text
