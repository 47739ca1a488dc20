// `xc2 compose` end to end on the tiny checkpoint tiny-b: user images, a captioned pool, placeholders,
// paragraph edits, reproducibility and usage errors. The tiny model is random, so only the structure
// of the Markdown/HTML is checked, never the text. --after fixes the image positions (a random model
// does not name <Seg> paragraphs), so steps 3a/3b run every time.
// Oracle: the structure the protocol promises (one image per position, each upload at most once,
// pool images from the pool, paths relative to the Markdown file, images embedded in the HTML).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "support/process.h"
#include "support/test_util.h"
#include "xc2/compose.h"

namespace xc2 {
namespace {

namespace fs = std::filesystem;

const std::string kExe = XC2_EXE;

test::ProcessResult run_xc2(std::vector<std::string> args) {
  args.insert(args.begin(), kExe);
  return test::run_process(args);
}

std::string tiny() { return test::data_path("models/tiny-b"); }
std::string image(const std::string& name) { return test::data_path("images/" + name); }

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

std::vector<compose::Block> blocks_of(const compose::Article& a, compose::Block::Kind kind) {
  std::vector<compose::Block> out;
  for (const auto& b : a.blocks)
    if (b.kind == kind) out.push_back(b);
  return out;
}

std::string canonical(const std::string& p) { return fs::weakly_canonical(fs::path(p)).string(); }

TEST(CliCompose, UserImages) {
  test::TempDir dir;
  fs::create_directories(dir.file("out"));
  const std::string md = dir.file("out/article.md"), html = dir.file("article.html");
  const std::vector<std::string> imgs = {image("photo_48x40.jpg"), image("odd_37x23.png")};
  const auto r = run_xc2({"compose", "--model", tiny(), "--image", imgs[0], "--image", imgs[1], "--after", "1", "-n",
                          "40", "--out", md, "--html", html, "Write about shapes."});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.empty());  // the article went to --out
  EXPECT_NE(r.err.find("step 1/3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 3/3"), std::string::npos) << r.err;

  const std::string text = test::read_file(md);
  const compose::Article a = compose::parse_markdown(text, dir.file("out"));
  ASSERT_GE(a.n_paragraphs(), 1) << text;
  EXPECT_EQ(a.blocks[0].kind, compose::Block::Kind::Paragraph);
  const auto figs = blocks_of(a, compose::Block::Kind::Image);
  ASSERT_EQ(figs.size(), 1u) << text;
  EXPECT_EQ(a.blocks[1].kind, compose::Block::Kind::Image);  // right after paragraph 1
  const std::set<std::string> uploads = {canonical(imgs[0]), canonical(imgs[1])};
  EXPECT_TRUE(uploads.count(canonical(figs[0].path))) << figs[0].path;
  // The Markdown path is relative to the Markdown file's folder.
  EXPECT_EQ(text.find("](/"), std::string::npos) << text;

  const std::string page = test::read_file(html);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count_of(page, "<img src=\"data:image/"), 1u);
  EXPECT_TRUE(page.find("data:image/jpeg;base64,") != std::string::npos ||
              page.find("data:image/png;base64,") != std::string::npos);
  EXPECT_EQ(page.find(test::data_path("images")), std::string::npos);  // embedded, not linked
  EXPECT_NE(page.find("</html>"), std::string::npos);
}

TEST(CliCompose, InstructionAfterImage) {
  // `--image a.jpg "Title"`: the title is the instruction, not a second image.
  const auto r = run_xc2({"compose", "--model", tiny(), "-n", "20", "--slots", "0", "--trace", "/dev/stderr", "--image",
                          image("photo_48x40.jpg"), "Title: shapes"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("<image>Title: shapes[UNUSED_TOKEN_145]"), std::string::npos) << r.err;
}

TEST(CliCompose, MorePositionsThanImages) {
  test::TempDir dir;
  const std::string md = dir.file("a.md");
  // One image, three positions (those past the article's end are dropped): the image is placed once.
  const auto r = run_xc2({"compose", "--model", tiny(), "--image", image("photo_48x40.jpg"), "--after", "1,2,3", "-n",
                          "40", "--out", md, "Write about shapes."});
  ASSERT_EQ(r.status, 0) << r.err;
  const compose::Article a = compose::parse_markdown(test::read_file(md), dir.path());
  EXPECT_EQ(blocks_of(a, compose::Block::Kind::Image).size(), 1u);
}

TEST(CliCompose, PoolNeedsCaptions) {
  test::TempDir dir;
  fs::create_directories(dir.file("pool"));
  fs::copy_file(image("photo_48x40.jpg"), dir.file("pool/a.jpg"));
  const auto r = run_xc2({"compose", "--model", tiny(), "--pool", dir.file("pool"), "Write about shapes."});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("xc2 caption"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("captions.jsonl"), std::string::npos) << r.err;
}

TEST(CliCompose, Pool) {
  test::TempDir dir;
  const std::string pool = dir.file("pool");
  fs::create_directories(pool);
  std::set<std::string> pool_files;
  for (const char* name : {"photo_48x40.jpg", "odd_37x23.png", "palette_30x30.png", "gray_33x20.png",
                           "lossy_32x24.webp", "rgb_45x31.bmp"}) {
    fs::copy_file(image(name), pool + "/" + name);
    pool_files.insert(canonical(pool + "/" + name));
  }
  const auto cap = run_xc2({"caption", "--model", tiny(), "-n", "12", pool, "--out", pool + "/captions.jsonl"});
  ASSERT_EQ(cap.status, 0) << cap.err;

  const std::string md = dir.file("a.md"), html = dir.file("a.html"), trace = dir.file("trace.jsonl");
  const auto r = run_xc2({"compose", "--model", tiny(), "--pool", pool, "--after", "1", "-n", "40", "--out", md,
                          "--html", html, "--trace", trace, "Write about shapes."});
  ASSERT_EQ(r.status, 0) << r.err;
  const compose::Article a = compose::parse_markdown(test::read_file(md), dir.path());
  const auto figs = blocks_of(a, compose::Block::Kind::Image);
  ASSERT_EQ(figs.size(), 1u) << test::read_file(md);
  EXPECT_TRUE(pool_files.count(canonical(figs[0].path))) << figs[0].path;
  const std::string page = test::read_file(html);
  EXPECT_EQ(count_of(page, "<img src=\"data:image/"), 1u);
  // The model calls: article, one caption (text path), one selection among 4 candidates.
  const std::string t = test::read_file(trace);
  EXPECT_EQ(count_of(t, "\"step\": \"article\""), 1u) << t;
  EXPECT_EQ(count_of(t, "\"step\": \"caption\""), 1u) << t;
  EXPECT_EQ(count_of(t, "\"step\": \"selection\""), 1u) << t;
  EXPECT_NE(t.find("D.<image>"), std::string::npos);
  EXPECT_EQ(t.find("E.<image>"), std::string::npos);
}

TEST(CliCompose, PlaceholdersAndReproducible) {
  test::TempDir dir;
  std::vector<std::string> args = {"compose", "--model", tiny(), "--after", "1", "-n", "40", "Write about shapes."};
  const auto r1 = run_xc2(args);
  ASSERT_EQ(r1.status, 0) << r1.err;
  const compose::Article a = compose::parse_markdown(r1.out, ".");
  ASSERT_GE(a.n_paragraphs(), 1);
  EXPECT_EQ(blocks_of(a, compose::Block::Kind::Placeholder).size(), 1u) << r1.out;
  EXPECT_NE(r1.out.find("> **Image placeholder:**"), std::string::npos);
  // Seed 8909 before every step: the same run gives the same article.
  const auto r2 = run_xc2(args);
  ASSERT_EQ(r2.status, 0) << r2.err;
  EXPECT_EQ(r1.out, r2.out);
  args.insert(args.end(), {"--html", dir.file("p.html")});
  ASSERT_EQ(run_xc2(args).status, 0);
  EXPECT_NE(test::read_file(dir.file("p.html")).find("class=\"placeholder\""), std::string::npos);
}

TEST(CliCompose, TextOnlyByDefault) {
  const auto r = run_xc2({"compose", "--model", tiny(), "-n", "20", "-q", "Write about shapes."});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const compose::Article a = compose::parse_markdown(r.out, ".");
  EXPECT_EQ(static_cast<int>(a.blocks.size()), a.n_paragraphs());
}

TEST(CliCompose, Edits) {
  test::TempDir dir;
  const std::string md = dir.file("a.md");
  // An article with an image between two paragraphs.
  fs::copy_file(image("photo_48x40.jpg"), dir.file("p.jpg"));
  {
    std::ofstream o(md);
    o << "# Shapes\n\nCircles are round.\n\n![a photo](p.jpg)\n\nSquares have corners.\n";
  }
  const std::string out = dir.file("b.md");
  auto r = run_xc2(
      {"compose", "--model", tiny(), "--article", md, "--insert", "2", "--ignore-eos", "--out", out, "Triangles."});
  ASSERT_EQ(r.status, 0) << r.err;
  compose::Article b = compose::parse_markdown(test::read_file(out), dir.path());
  ASSERT_EQ(b.n_paragraphs(), 4) << test::read_file(out);
  // The new paragraph goes after paragraph 2 and its image.
  ASSERT_EQ(b.blocks.size(), 5u);
  EXPECT_EQ(b.blocks[0].text, "# Shapes");
  EXPECT_EQ(b.blocks[1].text, "Circles are round.");
  EXPECT_EQ(b.blocks[2].kind, compose::Block::Kind::Image);
  EXPECT_EQ(b.blocks[3].kind, compose::Block::Kind::Paragraph);
  EXPECT_EQ(b.blocks[3].text.find('\n'), std::string::npos);
  EXPECT_EQ(b.blocks[4].text, "Squares have corners.");
  EXPECT_EQ(canonical(b.blocks[2].path), canonical(dir.file("p.jpg")));

  r = run_xc2({"compose", "--model", tiny(), "--article", md, "--shorten", "3", "--ignore-eos", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  b = compose::parse_markdown(r.out, dir.path());
  ASSERT_EQ(b.blocks.size(), 4u) << r.out;
  EXPECT_EQ(b.blocks[1].text, "Circles are round.");
  EXPECT_EQ(b.blocks[2].kind, compose::Block::Kind::Image);
  EXPECT_NE(b.blocks[3].text, "Squares have corners.");

  // Out of range, missing outline, no edit flag.
  EXPECT_EQ(run_xc2({"compose", "--model", tiny(), "--article", md, "--rewrite", "4", "x"}).status, 2);
  EXPECT_EQ(run_xc2({"compose", "--model", tiny(), "--article", md, "--insert", "1"}).status, 2);
  EXPECT_EQ(run_xc2({"compose", "--model", tiny(), "--article", md, "x"}).status, 2);
}

TEST(CliCompose, UsageErrors) {
  std::vector<std::string> many = {"compose", "--model", tiny(), "x"};
  for (int i = 0; i < 11; ++i) many.insert(many.end(), {"--image", image("photo_48x40.jpg")});
  EXPECT_EQ(run_xc2(many).status, 2);
  EXPECT_EQ(run_xc2({"compose", "--model", tiny(), "--image", image("photo_48x40.jpg"), "--pool",
                     test::data_path("images"), "x"})
                .status,
            2);
  EXPECT_EQ(run_xc2({"compose", "--model", tiny()}).status, 2);                          // no instruction
  EXPECT_EQ(run_xc2({"compose", "--model", tiny(), "--slots", "many", "x"}).status, 2);  // bad --slots
  EXPECT_EQ(run_xc2({"compose", "--model", tiny(), "--slots", "2", "--after", "1", "x"}).status, 2);
  const auto bad = run_xc2({"compose", "--model", tiny(), "--image", image("not_an_image.png"), "x"});
  EXPECT_EQ(bad.status, 2) << bad.err;
  const auto help = run_xc2({"compose", "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("Examples:"), std::string::npos);
  EXPECT_NE(help.out.find("--pool"), std::string::npos);
}

}  // namespace
}  // namespace xc2
