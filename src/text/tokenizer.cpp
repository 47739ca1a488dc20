// The InternLM-XComposer2 tokenizer (model-spec §9) over the sentencepiece library (the only file
// that includes it), with the HF slow-tokenizer semantics that tools/reference/xc2_ref.py implements:
//
//   encode(text, add_bos): split text on the literal strings "<s>", "</s>", "<unk>" (left to right; at a
//     position at most one can match, no whitespace stripped around them, empty chunks skipped); those
//     map to sp.bos_id()/eos_id()/unk_id(); every other chunk is SentencePiece-encoded on its own (the
//     model's normalizer, e.g. add_dummy_prefix, applies per chunk); [bos] first when add_bos.
//   decode(ids, skip=true): drop <s>, </s>, <unk>; text = sp.DecodeIds(rest); then transformers'
//     clean_up_tokenization, which upstream's convert_tokens_to_string applies unconditionally:
//     " ." -> ".", " ?" -> "?", " !" -> "!", " ," -> ",", " ' " -> "'", " n't" -> "n't", " 'm" -> "'m",
//     " 's" -> "'s", " 've" -> "'ve", " 're" -> "'re", in this order, each a single left-to-right pass.
//   decode(ids, skip=false): upstream's loop: each special token is written literally, preceded by a
//     space when the token before it was not special; the runs between are sp-decoded; then clean-up.
//
// StreamDecoder: each push re-decodes the ids seen so far (O(n) per token, well under a millisecond for
// thousands of tokens) and returns the part that can no longer change: it holds back trailing byte
// pieces that may still complete a UTF-8 sequence, and a short text tail that a clean-up pattern could
// still rewrite (" " before ".", " n" before "'t", ...). finish() returns the rest of decode(ids, true).
#include "text/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/mmap_file.h"

namespace xc2::text {

namespace {

const char* const kSpecialStrings[3] = {"<s>", "</s>", "<unk>"};
const char* const kImStart = "[UNUSED_TOKEN_146]";
const char* const kImEnd = "[UNUSED_TOKEN_145]";
const char* const kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// transformers' PreTrainedTokenizerBase.clean_up_tokenization (Python str.replace chain).
std::string clean_up_tokenization(const std::string& s) {
  static const char* const kRules[][2] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
  };
  std::string out = s;
  for (const auto& r : kRules) {
    if (out.find(r[0]) != std::string::npos) out = replace_all(out, r[0], r[1]);
  }
  return out;
}

// Raw text forms that the clean-up chain can rewrite, including the ones it only rewrites after an
// earlier rule ran (" ' " -> "'" can turn " n ' t" into " n't" and "  ' m" into " 'm").
const char* const kCleanupTriggers[] = {
    " .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're",
    " n ' t", "  ' m", "  ' s", "  ' ve", "  ' re",
};

// Length of the longest suffix of raw[0, end) that is a proper prefix of a trigger.
size_t dangerous_suffix(const std::string& raw, size_t end) {
  size_t hold = 0;
  for (const char* trig : kCleanupTriggers) {
    const std::string t(trig);
    for (size_t len = t.size() - 1; len > hold; --len) {
      if (end >= len && raw.compare(end - len, len, t, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

// Length of the tail of `raw` to hold back so that no suffix of the rest is a proper prefix of a
// trigger; then clean_up(rest) is a prefix of clean_up(raw + anything). Repeated, because cutting one
// tail can expose another (" ' ' " -> cut " " -> " ' '" -> cut " '" ...).
size_t cleanup_holdback(const std::string& raw) {
  size_t end = raw.size();
  while (true) {
    const size_t h = dangerous_suffix(raw, end);
    if (h == 0) break;
    end -= h;
  }
  return raw.size() - end;
}

// Expected length of a UTF-8 sequence from its first byte (lenient: any C0..F7 lead), 0 if not a lead.
int utf8_lead_length(uint8_t b) {
  if (b >= 0xC0 && b < 0xE0) return 2;
  if (b >= 0xE0 && b < 0xF0) return 3;
  if (b >= 0xF0 && b < 0xF8) return 4;
  return 0;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::string path;
  int32_t bos = -1, eos = -1, unk = -1, im_start = -1, im_end = -1;
  int vocab = 0;
  bool dummy_prefix = false;
  std::vector<int16_t> byte_value;  // per id: the byte of a <0xNN> piece, or -1
  int32_t byte_id[256];              // per byte: the id of its <0xNN> piece, or -1
  std::vector<bool> marker;          // per id: a piece that must not come from user text (chat markers)

  // One chunk whose [plain_begin, plain_end) ranges (chunk offsets) are user text: a marker piece matched
  // there becomes the byte pieces of its text.
  void encode_chunk_plain(const std::string& chunk, const std::vector<TextSpan>& plain,
                          std::vector<int32_t>* out) const {
    const sentencepiece::ImmutableSentencePieceText spt = sp.EncodeAsImmutableProto(chunk);
    for (size_t k = 0; k < spt.pieces_size(); ++k) {
      const auto piece = spt.pieces(static_cast<int>(k));
      const int32_t id = static_cast<int32_t>(piece.id());
      const size_t b = piece.begin(), e = piece.end();
      bool in_plain = false;
      for (const TextSpan& s : plain) in_plain = in_plain || (b < s.end && e > s.begin);
      if (id < 0 || id >= vocab || !marker[static_cast<size_t>(id)] || !in_plain || e > chunk.size() || b >= e) {
        out->push_back(id);
        continue;
      }
      for (size_t i = b; i < e; ++i) {
        const int32_t bid = byte_id[static_cast<unsigned char>(chunk[i])];
        out->push_back(bid >= 0 ? bid : unk);
      }
    }
  }

  void encode_chunk(const std::string& chunk, std::vector<int32_t>* out) const {
    std::vector<int> ids;
    const auto st = sp.Encode(chunk, &ids);
    XC2_CHECK(st.ok(), Internal, "sentencepiece encode failed: ", st.ToString());
    out->insert(out->end(), ids.begin(), ids.end());
  }

  std::string sp_decode(const std::vector<int>& ids) const {
    if (ids.empty()) return "";
    std::string text;
    const auto st = sp.Decode(ids, &text);
    XC2_CHECK(st.ok(), Internal, "sentencepiece decode failed: ", st.ToString());
    return text;
  }

  void check_ids(const std::vector<int32_t>& ids) const {
    for (const int32_t id : ids) {
      XC2_CHECK(id >= 0 && id < vocab, InvalidArgument, "token id ", id, " is out of range (vocabulary size ",
                vocab, ")");
    }
  }

  bool special(int32_t id) const { return id == bos || id == eos || id == unk; }

  // decode(ids, skip=true) before clean-up.
  std::string raw_decode_skip(const std::vector<int32_t>& ids, size_t n) const {
    std::vector<int> keep;
    keep.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (!special(ids[i])) keep.push_back(ids[i]);
    }
    return sp_decode(keep);
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::shared_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  if (is_directory(path)) XC2_THROW(Io, "'", path, "': is a directory, expected a tokenizer.model file");
  if (!file_exists(path)) XC2_THROW(NotFound, "'", path, "': no such tokenizer file");
  const std::string bytes = read_file(path);
  std::shared_ptr<Tokenizer> tok(new Tokenizer());
  Impl& m = *tok->impl_;
  m.path = path;
  // libsentencepiece reports some malformed models by throwing (e.g. its trie builder on an empty piece).
  sentencepiece::util::Status st;
  try {
    st = m.sp.LoadFromSerializedProto(bytes);
  } catch (const std::exception& e) {
    XC2_THROW(Io, "'", path, "': not a valid SentencePiece model (", e.what(), ")");
  }
  XC2_CHECK(st.ok(), Io, "'", path, "': not a valid SentencePiece model (", st.ToString(), ")");
  m.vocab = m.sp.GetPieceSize();
  XC2_CHECK(m.vocab > 0, Io, "'", path, "': SentencePiece model has an empty vocabulary");
  m.bos = m.sp.bos_id();
  m.eos = m.sp.eos_id();
  m.unk = m.sp.unk_id();
  XC2_CHECK(m.bos >= 0 && m.eos >= 0 && m.unk >= 0, Unsupported, "'", path,
            "': the tokenizer lacks <s>, </s> or <unk> (bos ", m.bos, ", eos ", m.eos, ", unk ", m.unk, ")");
  m.im_start = tok->piece_to_id(kImStart);
  m.im_end = tok->piece_to_id(kImEnd);
  XC2_CHECK(m.im_start >= 0 && m.im_end >= 0, Unsupported, "'", path, "': the tokenizer has no ",
            m.im_start < 0 ? kImStart : kImEnd, " piece (not an InternLM-XComposer2 tokenizer)");
  m.byte_value.assign(m.vocab, -1);
  std::fill(std::begin(m.byte_id), std::end(m.byte_id), -1);
  m.marker.assign(static_cast<size_t>(m.vocab), false);
  for (int id = 0; id < m.vocab; ++id) {
    if (id == m.im_start || id == m.im_end || m.sp.IdToPiece(id).rfind("[UNUSED_TOKEN_", 0) == 0)
      m.marker[static_cast<size_t>(id)] = true;
  }
  for (int id = 0; id < m.vocab; ++id) {
    if (!m.sp.IsByte(id)) continue;
    const std::string p = m.sp.IdToPiece(id);  // "<0xNN>"
    const int hi = p.size() == 6 ? hex_digit(p[3]) : -1, lo = p.size() == 6 ? hex_digit(p[4]) : -1;
    XC2_CHECK(p.compare(0, 3, "<0x") == 0 && hi >= 0 && lo >= 0 && p[5] == '>', Io, "'", path,
              "': byte piece ", id, " is not of the form <0xNN>: '", p, "'");
    m.byte_value[id] = static_cast<int16_t>(hi * 16 + lo);
    if (m.byte_id[hi * 16 + lo] < 0) m.byte_id[hi * 16 + lo] = id;
  }
  // add_dummy_prefix is not exposed without the protobuf headers: a lone "a" encodes to pieces that start
  // with "▁" exactly when the normalizer adds the dummy prefix.
  std::vector<std::string> pieces;
  const auto st2 = m.sp.Encode("a", &pieces);
  m.dummy_prefix = st2.ok() && !pieces.empty() && pieces[0].compare(0, 3, kSpaceSymbol) == 0;
  return tok;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const { return encode(text, add_bos, {}); }

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos, const std::vector<TextSpan>& plain) const {
  const Impl& m = *impl_;
  auto in_plain = [&plain](size_t pos) {
    for (const TextSpan& s : plain)
      if (pos >= s.begin && pos < s.end) return true;
    return false;
  };
  // A chunk [a, b): plain ranges that overlap it, in chunk offsets.
  auto encode_chunk = [&](size_t a, size_t b, std::vector<int32_t>* out) {
    std::vector<TextSpan> local;
    for (const TextSpan& s : plain)
      if (s.begin < b && s.end > a) local.push_back({std::max(s.begin, a) - a, std::min(s.end, b) - a});
    if (local.empty()) m.encode_chunk(text.substr(a, b - a), out);
    else m.encode_chunk_plain(text.substr(a, b - a), local, out);
  };
  std::vector<int32_t> ids;
  if (add_bos) ids.push_back(m.bos);
  const int32_t special_ids[3] = {m.bos, m.eos, m.unk};
  size_t chunk_start = 0, pos = 0;
  while (pos < text.size()) {
    int hit = -1;
    if (text[pos] == '<' && !in_plain(pos)) {
      for (int s = 0; s < 3; ++s) {
        if (text.compare(pos, std::char_traits<char>::length(kSpecialStrings[s]), kSpecialStrings[s]) == 0) {
          hit = s;
          break;
        }
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    if (pos > chunk_start) encode_chunk(chunk_start, pos, &ids);
    ids.push_back(special_ids[hit]);
    pos += std::char_traits<char>::length(kSpecialStrings[hit]);
    chunk_start = pos;
  }
  if (text.size() > chunk_start) encode_chunk(chunk_start, text.size(), &ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  m.check_ids(ids);
  if (skip_special_tokens) return clean_up_tokenization(m.raw_decode_skip(ids, ids.size()));
  if (ids.empty()) return "";
  // Upstream convert_tokens_to_string: a special token is appended literally, with a space in front
  // when the previous token was not special; the pieces between are decoded by sentencepiece.
  std::string text;
  std::vector<int> cur;
  bool prev_special = false;
  for (const int32_t id : ids) {
    if (m.special(id)) {
      if (!prev_special) text += ' ';
      text += m.sp_decode(cur);
      text += m.sp.IdToPiece(id);
      cur.clear();
      prev_special = true;
    } else {
      cur.push_back(id);
      prev_special = false;
    }
  }
  text += m.sp_decode(cur);
  return clean_up_tokenization(text);
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::unk_id() const { return impl_->unk; }
int32_t Tokenizer::im_start_id() const { return impl_->im_start; }
int32_t Tokenizer::im_end_id() const { return impl_->im_end; }
int Tokenizer::vocab_size() const { return impl_->vocab; }
bool Tokenizer::adds_dummy_prefix() const { return impl_->dummy_prefix; }

int32_t Tokenizer::piece_to_id(const std::string& piece) const {
  const Impl& m = *impl_;
  const int id = m.sp.PieceToId(piece);
  // sentencepiece maps unknown pieces to the <unk> id.
  if (id < 0 || id >= m.vocab) return -1;
  if (id == m.sp.unk_id() && m.sp.IdToPiece(id) != piece) return -1;
  return id;
}

std::string Tokenizer::id_to_piece(int32_t id) const {
  const Impl& m = *impl_;
  XC2_CHECK(id >= 0 && id < m.vocab, InvalidArgument, "token id ", id, " is out of range (vocabulary size ",
            m.vocab, ")");
  return m.sp.IdToPiece(id);
}

bool Tokenizer::is_special(int32_t id) const { return impl_->special(id); }

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& m = *impl_;
  XC2_CHECK(id >= 0 && id < m.vocab, InvalidArgument, "token id ", id, " is out of range (vocabulary size ",
            m.vocab, ")");
  if (m.special(id) || m.sp.IsControl(id) || m.sp.IsUnknown(id)) return "";
  if (m.byte_value[id] >= 0) return std::string(1, static_cast<char>(m.byte_value[id]));
  return replace_all(m.sp.IdToPiece(id), kSpaceSymbol, " ");
}

// ------------------------------------------------------------------------------------------------
// StreamDecoder

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer) : tok_(tokenizer) {}

std::string StreamDecoder::push(int32_t id) {
  const Tokenizer::Impl& m = *tok_.impl_;
  XC2_CHECK(id >= 0 && id < m.vocab, InvalidArgument, "token id ", id, " is out of range (vocabulary size ",
            m.vocab, ")");
  if (m.special(id)) return "";  // decode(skip_special_tokens=true) drops them entirely
  ids_.push_back(id);

  // Trailing byte pieces that may still be completed into one UTF-8 character are held back.
  size_t n = ids_.size();
  {
    size_t run = 0;  // trailing byte pieces
    while (run < n && m.byte_value[ids_[n - 1 - run]] >= 0) ++run;
    // Find the last lead byte within the run's last 3 bytes; hold it and what follows if incomplete.
    for (size_t back = 1; back <= std::min<size_t>(run, 4); ++back) {
      const uint8_t b = static_cast<uint8_t>(m.byte_value[ids_[n - back]]);
      if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
      const int need = utf8_lead_length(b);
      if (need > 0 && static_cast<size_t>(need) > back) n -= back;
      break;
    }
  }
  const std::string raw = m.raw_decode_skip(ids_, n);
  const size_t hold = cleanup_holdback(raw);
  const std::string stable = clean_up_tokenization(raw.substr(0, raw.size() - hold));
  if (stable.size() <= emitted_) return "";
  std::string out = stable.substr(emitted_);
  emitted_ = stable.size();
  return out;
}

std::string StreamDecoder::finish() {
  const std::string all = tok_.decode(ids_, true);
  std::string out = all.size() > emitted_ ? all.substr(emitted_) : std::string();
  ids_.clear();
  emitted_ = 0;
  return out;
}

}  // namespace xc2::text
