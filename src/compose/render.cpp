// Rendering for xc2::compose: an Article as Markdown, and as one self-contained HTML page with the
// images embedded as data: URIs.
#include "compose/render.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "compose/text_util.h"
#include "xc2/compose.h"

namespace xc2::compose {

const char* const kPlaceholderLead = "> **Image placeholder:**";

namespace {

namespace fs = std::filesystem;

// ---- Markdown helpers ----

std::string md_escape_alt(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r') {
      out += ' ';
      continue;
    }
    if (c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string md_destination(const std::string& path) {
  bool needs_angle = false;
  for (char c : path) needs_angle |= c == ' ' || c == '(' || c == ')' || c == '\t';
  if (!needs_angle) return path;
  std::string out = "<";
  for (char c : path) {
    if (c == '<')
      out += "%3C";
    else if (c == '>')
      out += "%3E";
    else
      out += c;
  }
  return out + ">";
}

std::string relative_to(const std::string& path, const std::string& dir) {
  if (is_url(path)) return path;
  std::error_code ec;
  const fs::path abs = fs::absolute(fs::path(path), ec).lexically_normal();
  if (ec) return path;
  const fs::path base = fs::absolute(fs::path(dir.empty() ? "." : dir), ec).lexically_normal();
  if (ec) return path;
  const fs::path rel = abs.lexically_relative(base);
  if (rel.empty()) return abs.generic_string();
  return rel.generic_string();
}

// ---- HTML helpers ----

// Escaped text with **bold** spans.
std::string inline_html(const std::string& text) {
  std::string esc = html_escape(text);
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t a = esc.find("**", pos);
    if (a == std::string::npos) break;
    const size_t b = esc.find("**", a + 2);
    if (b == std::string::npos || b == a + 2) break;
    out += esc.substr(pos, a - pos) + "<strong>" + esc.substr(a + 2, b - a - 2) + "</strong>";
    pos = b + 2;
  }
  out += esc.substr(pos);
  return out;
}

std::string paragraph_html(const std::string& text) {
  int level = 0;
  while (level < static_cast<int>(text.size()) && level < 7 && text[static_cast<size_t>(level)] == '#') ++level;
  if (level >= 1 && level <= 6 && static_cast<size_t>(level) < text.size() && text[static_cast<size_t>(level)] == ' ') {
    const std::string tag = "h" + std::to_string(level);
    return "<" + tag + ">" + inline_html(strip(text.substr(static_cast<size_t>(level)))) + "</" + tag + ">\n";
  }
  std::string body;
  std::istringstream lines(text);
  std::string line;
  bool first = true;
  while (std::getline(lines, line)) {
    if (!first) body += "<br>\n";
    body += inline_html(line);
    first = false;
  }
  return "<p>" + body + "</p>\n";
}

const char* const kCss = R"(
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fdfdfc; --muted: #6b6b70; --rule: #d8d8dc; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8ea; --bg: #18181a; --muted: #a0a0a8; --rule: #3a3a40; } }
html { background: var(--bg); color: var(--fg); }
body { margin: 0; padding: 3rem 1.25rem 4rem;
  font: 18px/1.75 "Iowan Old Style", "Palatino Linotype", Georgia, "Noto Serif CJK SC", "Songti SC", "Source Han Serif SC", serif; }
main { max-width: 42rem; margin: 0 auto; }
h1, h2, h3, h4, h5, h6 { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", sans-serif;
  line-height: 1.3; margin: 2.2rem 0 0.8rem; }
h1 { font-size: 2rem; } h2 { font-size: 1.5rem; } h3 { font-size: 1.25rem; }
p { margin: 0 0 1.2rem; text-align: justify; hyphens: auto; overflow-wrap: break-word; }
:lang(en) p { text-align: left; }
figure { margin: 2rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border-radius: 6px; box-shadow: 0 1px 6px rgba(0,0,0,0.18); }
figcaption { margin-top: 0.6rem; font-size: 0.9rem; color: var(--muted); font-style: italic; }
figure.placeholder .box { border: 2px dashed var(--rule); border-radius: 6px; padding: 2.5rem 1rem; color: var(--muted);
  font-family: system-ui, sans-serif; font-size: 0.95rem; letter-spacing: 0.05em; text-transform: uppercase; }
footer { max-width: 42rem; margin: 3rem auto 0; padding-top: 1rem; border-top: 1px solid var(--rule);
  color: var(--muted); font: 0.8rem system-ui, sans-serif; }
)";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

std::string to_markdown(const Article& article, const std::string& markdown_dir) {
  std::string out;
  for (size_t i = 0; i < article.blocks.size(); ++i) {
    const Block& b = article.blocks[i];
    if (i) out += "\n\n";
    switch (b.kind) {
      case Block::Kind::Paragraph:
        out += drop_controls(b.text);
        break;
      case Block::Kind::Image:
        out += "![" + md_escape_alt(drop_controls(b.text)) + "](" + md_destination(relative_to(b.path, markdown_dir)) +
               ")";
        break;
      case Block::Kind::Placeholder: {
        const std::string cap = strip(one_line(b.text));
        out += std::string(kPlaceholderLead) + (cap.empty() ? "" : " " + cap);
        break;
      }
    }
  }
  if (!out.empty()) out += "\n";
  return out;
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

std::string html_escape(const std::string& text) {
  const std::string s = drop_controls(text);
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string mime_type_from_magic(const std::string& b) {
  auto at = [&](size_t off, const char* sig, size_t n) {
    return b.size() >= off + n && b.compare(off, n, sig, n) == 0;
  };
  if (at(0, "\x89PNG\r\n\x1a\n", 8)) return "image/png";
  if (at(0, "\xFF\xD8\xFF", 3)) return "image/jpeg";
  if (at(0, "GIF87a", 6) || at(0, "GIF89a", 6)) return "image/gif";
  if (at(0, "RIFF", 4) && at(8, "WEBP", 4)) return "image/webp";
  if (at(0, "BM", 2)) return "image/bmp";
  return "application/octet-stream";
}

std::string base64_encode(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string to_html(const Article& article, const std::string& title) {
  std::string body;
  for (const Block& b : article.blocks) {
    switch (b.kind) {
      case Block::Kind::Paragraph:
        body += paragraph_html(b.text);
        break;
      case Block::Kind::Image: {
        std::string src = b.path;
        if (!is_url(b.path)) {
          std::ifstream in(b.path, std::ios::binary);
          if (!in) throw Error(ErrorCode::NotFound, "cannot read image '" + b.path + "' for the HTML page");
          std::ostringstream ss;
          ss << in.rdbuf();
          if (in.bad()) throw Error(ErrorCode::Io, "cannot read image '" + b.path + "' for the HTML page");
          const std::string bytes = ss.str();
          src = "data:" + mime_type_from_magic(bytes) + ";base64," + base64_encode(bytes);
        }
        const std::string alt = b.text.empty() ? fs::path(b.path).filename().string() : b.text;
        body += "<figure>\n<img src=\"" + src + "\" alt=\"" + html_escape(alt) + "\">\n";
        if (!b.text.empty()) body += "<figcaption>" + html_escape(b.text) + "</figcaption>\n";
        body += "</figure>\n";
        break;
      }
      case Block::Kind::Placeholder:
        body += "<figure class=\"placeholder\">\n<div class=\"box\">Image placeholder</div>\n";
        if (!b.text.empty()) body += "<figcaption>" + html_escape(b.text) + "</figcaption>\n";
        body += "</figure>\n";
        break;
    }
  }
  // lang helps the browser pick fonts and line breaking: Chinese when CJK characters dominate.
  size_t n_cjk = 0, n_letters = 0;
  for (const Block& b : article.blocks) {
    if (b.kind != Block::Kind::Paragraph) continue;
    for (uint32_t cp : code_points(b.text)) {
      if (cp >= 0x4E00 && cp <= 0x9FFF)
        ++n_cjk;
      else if (is_latin_letter(cp))
        ++n_letters;
    }
  }
  const char* lang = n_cjk * 3 > n_letters ? "zh" : "en";
  std::string page = std::string("<!DOCTYPE html>\n<html lang=\"") + lang +
                     "\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                     "<meta name=\"generator\" content=\"xc2 compose\">\n<title>" +
                     html_escape(title.empty() ? "Article" : title) + "</title>\n<style>" + kCss +
                     "</style>\n</head>\n<body>\n<main>\n";
  page += body;
  page += "</main>\n<footer>Written with InternLM-XComposer2 (xc2 compose).</footer>\n</body>\n</html>\n";
  return page;
}

}  // namespace xc2::compose
