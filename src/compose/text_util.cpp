// UTF-8 and string helpers of xc2::compose (text_util.h), and the public strip().
#include "compose/text_util.h"

#include <cstring>

namespace xc2::compose {

uint32_t decode_at(const std::string& s, size_t i, size_t& len) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + static_cast<size_t>(n) > s.size()) {
    len = 1;
    return 0xDC00u + c;  // a lone surrogate value: never whitespace, never a letter
  }
  uint32_t cp = n == 1 ? c : c & (0x7f >> n);
  for (int k = 1; k < n; ++k) {
    const unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((cc >> 6) != 2) {
      len = 1;
      return 0xDC00u + c;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  len = static_cast<size_t>(n);
  return cp;
}

bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_separator(uint32_t cp) {
  if (is_py_space(cp)) return true;
  if (cp < 0x80) return std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", static_cast<int>(cp)) != nullptr && cp != 0;
  return (cp >= 0x2010 && cp <= 0x205E) ||  // general punctuation: dashes, quotes, ellipsis
         (cp >= 0x3000 && cp <= 0x303F) ||  // CJK symbols and punctuation: 、。「」《》
         (cp >= 0xFF01 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) ||
         (cp >= 0xFF5B && cp <= 0xFF65) ||  // full-width punctuation: ，！？：；（）
         cp == 0xB7;                        // middle dot
}

bool is_latin_letter(uint32_t cp) {
  return (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || (cp >= 0xFF21 && cp <= 0xFF3A) ||
         (cp >= 0xFF41 && cp <= 0xFF5A);
}

std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0, len = 0; i < s.size(); i += len) out.push_back(decode_at(s, i, len));
  return out;
}

std::string cut_utf8(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t i = 0, len = 0;
  while (i < s.size()) {
    decode_at(s, i, len);
    if (i + len > max_bytes) break;
    i += len;
  }
  return s.substr(0, i);
}

std::string strip(const std::string& s) {
  size_t b = 0, len = 0;
  while (b < s.size()) {
    const uint32_t cp = decode_at(s, b, len);
    if (!is_py_space(cp)) break;
    b += len;
  }
  size_t e = b;  // end of the last non-space character
  for (size_t i = b; i < s.size(); i += len) {
    const uint32_t cp = decode_at(s, i, len);
    if (!is_py_space(cp)) e = i + len;
  }
  return s.substr(b, e - b);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

std::string drop_controls(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u == '\r')
      out += ' ';
    else if ((u >= 0x20 && u != 0x7f) || u == '\t' || u == '\n')
      out += c;
  }
  return out;
}

std::string one_line(const std::string& s) { return replace_all(drop_controls(s), "\n", " "); }

bool is_url(const std::string& p) { return p.find("://") != std::string::npos || starts_with(p, "data:"); }

}  // namespace xc2::compose
