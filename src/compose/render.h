// Output helpers private to xc2::compose: the Markdown placeholder line (which parse_markdown reads
// back) and the pieces of the self-contained HTML page. to_markdown() and to_html() are public
// (xc2/compose.h) and live in render.cpp.
#pragma once

#include <string>

namespace xc2::compose {

// The Markdown line of a placeholder: "> **Image placeholder:** caption".
extern const char* const kPlaceholderLead;  // "> **Image placeholder:**"

// Control characters dropped (as drop_controls), then & < > " ' escaped.
std::string html_escape(const std::string& s);
// "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", or "application/octet-stream".
std::string mime_type_from_magic(const std::string& bytes);
// Standard base64 with padding.
std::string base64_encode(const std::string& bytes);

}  // namespace xc2::compose
