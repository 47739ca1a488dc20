// Text helpers private to xc2::compose: UTF-8 decoding with Python's notion of whitespace, and the
// small string edits the protocol and the renderers share. strip() (Python str.strip) is public and
// declared in xc2/compose.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "xc2/compose.h"

namespace xc2::compose {

// ---- UTF-8 ----

// Decodes the code point at s[i]; sets `len` to its byte length. Invalid bytes decode as themselves
// (one byte, value >= 0x80 but never whitespace or a letter), so nothing is lost.
uint32_t decode_at(const std::string& s, size_t i, size_t& len);

// Python's str.isspace() (and so the `\s` of `re` on str patterns).
bool is_py_space(uint32_t cp);

// Whitespace and ASCII, general, CJK and full-width punctuation.
bool is_separator(uint32_t cp);

// A-Z, a-z and their full-width forms.
bool is_latin_letter(uint32_t cp);

std::vector<uint32_t> code_points(const std::string& s);

// Whole UTF-8 characters of s, at most max_bytes bytes.
std::string cut_utf8(const std::string& s, size_t max_bytes);

// ---- strings ----

// Every non-overlapping occurrence of `from` (left to right) replaced; s unchanged if `from` is empty.
std::string replace_all(std::string s, const std::string& from, const std::string& to);

bool starts_with(const std::string& s, const std::string& prefix);

// C0 control characters (and DEL) other than tab and newline (a model can emit them; HTML forbids them and
// they garble terminals) dropped; \r becomes a space.
std::string drop_controls(const std::string& s);

// One line for messages: controls dropped, newlines as spaces.
std::string one_line(const std::string& s);

// A URL ("scheme://...") or a data: URI, as opposed to a file path.
bool is_url(const std::string& p);

}  // namespace xc2::compose
