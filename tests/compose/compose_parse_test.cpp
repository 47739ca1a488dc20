// xc2::compose without a model: the demo's prompt strings byte for byte (model-spec §12), parsing of
// fixed model outputs, the running caption context, similarity ranking, and the Markdown/HTML output
// of a fixed article. Oracle: strings written out by hand from the demo source.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "compose/driver.h"
#include "compose/parse.h"
#include "compose/prompts.h"
#include "compose/render.h"
#include "support/test_util.h"
#include "xc2/compose.h"

namespace xc2::compose {
namespace {

const std::string kUser = "[UNUSED_TOKEN_146]user\n";
const std::string kTurnEnd = "[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n";
const std::string kMetaTurn =
    "[UNUSED_TOKEN_146]system\n"
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a conversational language model that is developed by Shanghai AI "
    "Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user "
    "such as English and 中文.\n"
    "[UNUSED_TOKEN_145]\n";

// ---- prompts ----

TEST(ComposePrompt, Text2Instruction) {
  EXPECT_EQ(text2instruction("hi", false),
            "[UNUSED_TOKEN_146]user\nhi[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n");
  EXPECT_EQ(text2instruction("hi", true), kMetaTurn + kUser + "hi" + kTurnEnd);
}

TEST(ComposePrompt, Article) {
  EXPECT_EQ(article_prompt("写一篇文章", 0, false), kUser + "写一篇文章" + kTurnEnd);
  EXPECT_EQ(article_prompt("Title: pandas", 1, false), kUser + "<image>Title: pandas" + kTurnEnd);
  // ('<image> ' * 2).strip() + instruction: no space before the instruction.
  EXPECT_EQ(article_prompt("Title: pandas", 2, false), kUser + "<image> <image>Title: pandas" + kTurnEnd);
  EXPECT_EQ(article_prompt("x", 0, true), kMetaTurn + kUser + "x" + kTurnEnd);
}

TEST(ComposePrompt, Sections) {
  const std::vector<std::string> p = {"标题", "第一段。", "第二段。"};
  EXPECT_EQ(section(7, "abc"), "<Seg7> abc\n");
  EXPECT_EQ(sections(p, 0, 3), "<Seg0> 标题\n<Seg1> 第一段。\n<Seg2> 第二段。\n");
  EXPECT_EQ(sections(p, 1, 99), "<Seg1> 第一段。\n<Seg2> 第二段。\n");
}

TEST(ComposePrompt, Location) {
  const std::vector<std::string> p = {"标题", "第一段。"};
  EXPECT_EQ(location_prompt(p, 0, "6", false),
            kUser + "给定文章\"<Seg0> 标题\n<Seg1> 第一段。\n\" 根据上述文章，选择适合插入图像的6行" + kTurnEnd +
                "适合插入图像的行是");
  EXPECT_EQ(location_prompt(p, 0, "", false),
            kUser + "给定文章\"<Seg0> 标题\n<Seg1> 第一段。\n\" 根据上述文章，选择适合插入图像的行" + kTurnEnd +
                "适合插入图像的行是");
  EXPECT_EQ(location_prompt(p, 2, "2", false),
            kUser + "<image> <image>给定文章\"<Seg0> 标题\n<Seg1> 第一段。\n\" 根据上述文章，选择适合插入图像的2行" +
                kTurnEnd + "适合插入图像的行是");
  EXPECT_EQ(std::string(kLocationPrefix), "适合插入图像的行是");
}

TEST(ComposePrompt, CaptionPast) {
  EXPECT_EQ(caption_pasts({}), "");
  EXPECT_EQ(caption_past({}), "");
  const std::vector<SlotCaption> one = {{1, "一张山水画"}};
  EXPECT_EQ(caption_pasts(one), "现在<Seg1>后插入图像对应的标题是\"一张山水画\"， ");
  EXPECT_EQ(caption_past(one), "现在<Seg1>后插入图像对应的标题是\"一张山水画\"。");
  const std::vector<SlotCaption> two = {{1, "一张山水画"}, {3, "A panda"}};
  EXPECT_EQ(caption_pasts(two),
            "现在<Seg1>后插入图像对应的标题是\"一张山水画\"， <Seg3>后插入图像对应的标题是\"A panda\"， ");
  EXPECT_EQ(caption_past(two),
            "现在<Seg1>后插入图像对应的标题是\"一张山水画\"， <Seg3>后插入图像对应的标题是\"A panda\"。");
}

TEST(ComposePrompt, Caption) {
  const std::vector<std::string> p = {"p0", "p1", "p2", "p3"};
  EXPECT_EQ(caption_prompt(p, 1, "", false),
            kUser + "给定文章\"<Seg0> p0\n<Seg1> p1\n<Seg2> p2\n\" 给出适合在<Seg1>后插入的图像对应的标题。" +
                kTurnEnd + "标题是\"");
  // The last paragraph: the sections stop at the end of the article.
  const std::string past = caption_past({{1, "cap"}});
  EXPECT_EQ(caption_prompt(p, 3, past, false),
            kUser +
                "给定文章\"<Seg0> p0\n<Seg1> p1\n<Seg2> p2\n<Seg3> p3\n\" 现在<Seg1>后插入图像对应的标题是\"cap\"。" +
                "给出适合在<Seg3>后插入的图像对应的标题。" + kTurnEnd + "标题是\"");
}

TEST(ComposePrompt, Selection) {
  EXPECT_EQ(
      selection_prompt({"a\nb\n"}, 4, false),
      kUser +
          "根据给定上下文和候选图像，选择合适的配图：a\nb\n候选图像包括: A.<image>\nB.<image>\nC.<image>\nD.<image>" +
          kTurnEnd + "最合适的图是");
  EXPECT_EQ(selection_prompt({"a\nb\n", "c\n"}, 2, false),
            kUser + "根据给定上下文和候选图像，选择合适的配图：a\nb\n<image>c\n候选图像包括: A.<image>\nB.<image>" +
                kTurnEnd + "最合适的图是");
}

TEST(ComposePrompt, Edits) {
  EXPECT_EQ(edit_prompt(EditKind::Rewrite, "段落", "", "素材", false),
            kUser + "改写以下段落：段落\n基于以下素材：素材" + kTurnEnd);
  EXPECT_EQ(edit_prompt(EditKind::Expand, "段落", "", "素材", false),
            kUser + "扩写以下段落：段落\n基于以下素材：素材" + kTurnEnd);
  EXPECT_EQ(edit_prompt(EditKind::Shorten, "段落", "", "ignored", false), kUser + "缩写以下段落：段落" + kTurnEnd);
  EXPECT_EQ(edit_prompt(EditKind::Insert, "甲", "乙", "大纲", false),
            kUser + "在以下两段中插入一段。\n第一段：甲\n第二段：乙\n插入段的大纲：大纲" + kTurnEnd);
}

// ---- parsing ----

TEST(ComposeParse, SplitParagraphs) {
  EXPECT_EQ(split_paragraphs("  标题\n\n  第一段。 \n\u3000\n第二段\n\n"),
            (std::vector<std::string>{"标题", "第一段。 ", "第二段"}));
  EXPECT_EQ(split_paragraphs("a\r\n\r\nb"), (std::vector<std::string>{"a\r", "b"}));  // as Python's re.sub
  EXPECT_EQ(split_paragraphs("one line"), (std::vector<std::string>{"one line"}));
  EXPECT_TRUE(split_paragraphs(" \n \t").empty());
  std::string many;
  for (int i = 0; i < 70; ++i) many += "p" + std::to_string(i) + "\n";
  const auto v = split_paragraphs(many);
  ASSERT_EQ(v.size(), 60u);
  EXPECT_EQ(v.back(), "p59");
  EXPECT_EQ(split_paragraphs(many, -1).size(), 70u);
}

TEST(ComposeParse, Strip) {
  EXPECT_EQ(strip("\u3000 a b\u00a0\n"), "a b");
  EXPECT_EQ(strip("   "), "");
  EXPECT_EQ(strip("中文"), "中文");
}

TEST(ComposeParse, Slots) {
  EXPECT_EQ(parse_slots("<Seg1>, <Seg3>, <Seg5>, <Seg7>, <Seg9>, <Seg11>.", 12), (std::vector<int>{1, 3, 5, 7, 9, 11}));
  // Order of appearance; repeats, out-of-range indices and digit-less matches ignored.
  EXPECT_EQ(parse_slots("<Seg4>和<Seg2>，<Seg4>，<Seg>，<Seg12>，<Seg0>", 12), (std::vector<int>{4, 2, 0}));
  EXPECT_EQ(parse_slots("<Seg<Seg2>", 5), (std::vector<int>{2}));
  EXPECT_EQ(parse_slots("<Seg99999999999999999999>", 5), (std::vector<int>{}));
  // At most K.
  EXPECT_EQ(parse_slots("<Seg1>, <Seg3>, <Seg5>", 12, 2), (std::vector<int>{1, 3}));
  EXPECT_TRUE(parse_slots("no idea", 12).empty());
}

TEST(ComposeParse, Caption) {
  EXPECT_EQ(parse_caption("一张古老的水墨画卷轴，上面描绘着传统的中国山水风景。\"\n后面的文字"),
            "一张古老的水墨画卷轴，上面描绘着传统的中国山水风景。");
  EXPECT_EQ(parse_caption("  A panda eating bamboo \" and more \""), "A panda eating bamboo");
  EXPECT_EQ(parse_caption(" no closing quote "), "no closing quote");
  EXPECT_EQ(parse_caption("\""), "");
}

TEST(ComposeParse, Letter) {
  EXPECT_EQ(parse_letter("C", 4), 2);
  EXPECT_EQ(parse_letter("：B。", 4), 1);
  EXPECT_EQ(parse_letter(" A.<image>", 4), 0);
  EXPECT_EQ(parse_letter("图Ｄ", 4), 3);  // full-width
  EXPECT_EQ(parse_letter("Answer: B", 4), 1);
  EXPECT_EQ(parse_letter("Best", 4), std::nullopt);  // inside a word
  EXPECT_EQ(parse_letter("E", 4), std::nullopt);     // not a candidate
  EXPECT_EQ(parse_letter("E", 5), 4);
  EXPECT_EQ(parse_letter("", 4), std::nullopt);
  EXPECT_EQ(parse_letter("是第三张", 4), std::nullopt);
}

TEST(ComposeParse, Similarity) {
  EXPECT_DOUBLE_EQ(caption_similarity("A panda.", "a panda"), 1.0);
  EXPECT_DOUBLE_EQ(caption_similarity("", "a panda"), 0.0);
  EXPECT_DOUBLE_EQ(caption_similarity("xy", "zw"), 0.0);
  const double s = caption_similarity("熊猫在吃竹子", "一只大熊猫正在吃竹子");
  EXPECT_GT(s, 0.3);
  EXPECT_LT(s, 1.0);
}

TEST(ComposeParse, RankBySimilarity) {
  const std::vector<std::string> en = {"A red car parked on a street.", "A giant panda eating bamboo in the forest.",
                                       "A bamboo forest in the mist.", ""};
  EXPECT_EQ(rank_by_similarity("a panda eating bamboo", en), (std::vector<size_t>{1, 2, 0, 3}));
  const std::vector<std::string> zh = {"一辆红色的汽车停在街上", "竹林里的雾", "一只大熊猫正在吃竹子"};
  EXPECT_EQ(rank_by_similarity("熊猫在吃竹子", zh)[0], 2u);
  // Ties keep the pool order.
  EXPECT_EQ(rank_by_similarity("zzz", {"a", "b", "c"}), (std::vector<size_t>{0, 1, 2}));
}

// ---- generation settings ----

TEST(ComposeOptions, Steps) {
  GenerationOptions base = demo_generation_options();
  EXPECT_EQ(base.max_new_tokens, 4096);
  EXPECT_TRUE(base.do_sample);
  EXPECT_EQ(base.top_k, 40);
  EXPECT_FLOAT_EQ(base.top_p, 0.8f);
  EXPECT_FLOAT_EQ(base.repetition_penalty, 1.005f);
  EXPECT_FLOAT_EQ(base.temperature, 1.0f);
  base.ignore_eos = true;
  const GenerationOptions a = step_options(Step::Article, base, 8909, 92544);
  EXPECT_EQ(a.max_new_tokens, 4096);
  EXPECT_TRUE(a.ignore_eos);
  EXPECT_EQ(a.seed, std::optional<uint64_t>(8909));
  EXPECT_TRUE(a.truncate_prompt);
  EXPECT_EQ(a.stop_ids, (std::vector<int32_t>{kDemoStopToken}));
  const GenerationOptions s = step_options(Step::Slots, base, 1, 320);
  EXPECT_EQ(s.max_new_tokens, 200);
  EXPECT_FALSE(s.ignore_eos);
  EXPECT_TRUE(s.stop_ids.empty());  // tiny vocabulary: no token 92397
  EXPECT_EQ(step_options(Step::Caption, base, 1, 320).max_new_tokens, 200);
  EXPECT_EQ(step_options(Step::Selection, base, 1, 320).max_new_tokens, 10);
  base.do_sample = false;
  EXPECT_FALSE(step_options(Step::Selection, base, 1, 320).do_sample);
}

// ---- articles ----

Article fixed_article(const std::string& image_path) {
  Article a;
  a.blocks.push_back({Block::Kind::Paragraph, "# Pandas & <friends>", ""});
  a.blocks.push_back({Block::Kind::Paragraph, "The giant panda eats **bamboo**.", ""});
  a.blocks.push_back({Block::Kind::Image, "A panda [eating]", image_path});
  a.blocks.push_back({Block::Kind::Paragraph, "熊猫生活在中国。", ""});
  a.blocks.push_back({Block::Kind::Placeholder, "竹林里的熊猫", ""});
  return a;
}

TEST(ComposeArticle, Accessors) {
  const Article a = fixed_article("x.png");
  EXPECT_EQ(a.n_paragraphs(), 3);
  EXPECT_EQ(a.paragraphs(),
            (std::vector<std::string>{"# Pandas & <friends>", "The giant panda eats **bamboo**.", "熊猫生活在中国。"}));
  EXPECT_EQ(a.paragraph_block(2), 3);
  EXPECT_EQ(a.paragraph_block(3), -1);
  EXPECT_EQ(a.title(), "Pandas & <friends>");
}

TEST(ComposeArticle, MarkdownRoundTrip) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("img"));
  const std::string img = dir.file("img/panda 1.png");
  test::write_bytes(img, "\x89PNG\r\n\x1a\nrest");
  const Article a = fixed_article(img);
  const std::string md = to_markdown(a, dir.path());
  EXPECT_EQ(md,
            "# Pandas & <friends>\n\nThe giant panda eats **bamboo**.\n\n![A panda \\[eating\\]](<img/panda 1.png>)\n\n"
            "熊猫生活在中国。\n\n> **Image placeholder:** 竹林里的熊猫\n");
  // Relative to another folder.
  EXPECT_NE(to_markdown(a, dir.file("img")).find("](<panda 1.png>)"), std::string::npos);

  const Article b = parse_markdown(md, dir.path());
  ASSERT_EQ(b.blocks.size(), a.blocks.size());
  for (size_t i = 0; i < a.blocks.size(); ++i) {
    EXPECT_EQ(b.blocks[i].kind, a.blocks[i].kind) << i;
    EXPECT_EQ(b.blocks[i].text, a.blocks[i].text) << i;
  }
  EXPECT_EQ(std::filesystem::path(b.blocks[2].path).lexically_normal(), std::filesystem::path(img).lexically_normal());
}

TEST(ComposeArticle, ParsePlainText) {
  // Plain model output: one paragraph per line; image lines stay in place.
  const Article a = parse_markdown("标题\n第一段\n![](pics/a.jpg)\n第二段\n", "/base");
  ASSERT_EQ(a.blocks.size(), 4u);
  EXPECT_EQ(a.n_paragraphs(), 3);
  EXPECT_EQ(a.blocks[2].kind, Block::Kind::Image);
  EXPECT_EQ(a.blocks[2].path, "/base/pics/a.jpg");
  // Blank-line blocks keep their soft line breaks.
  const Article b = parse_markdown("line one\nline two\n\n![cap](/abs/x.png \"title\")\nafter\n", "");
  ASSERT_EQ(b.blocks.size(), 3u);
  EXPECT_EQ(b.blocks[0].text, "line one\nline two");
  EXPECT_EQ(b.blocks[1].path, "/abs/x.png");
  EXPECT_EQ(b.blocks[1].text, "cap");
  EXPECT_EQ(b.blocks[2].text, "after");
}

TEST(ComposeArticle, Html) {
  test::TempDir dir;
  const std::string img = dir.file("p.png");
  const std::string bytes = std::string("\x89PNG\r\n\x1a\n", 8) + "xyz";
  test::write_bytes(img, bytes);
  const Article a = fixed_article(img);
  const std::string html = to_html(a, a.title());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<meta charset=\"utf-8\">"), std::string::npos);
  EXPECT_NE(html.find("<html lang=\"en\">"), std::string::npos);
  EXPECT_NE(html.find("<title>Pandas &amp; &lt;friends&gt;</title>"), std::string::npos);
  EXPECT_NE(html.find("<h1>Pandas &amp; &lt;friends&gt;</h1>"), std::string::npos);
  EXPECT_NE(html.find("<p>The giant panda eats <strong>bamboo</strong>.</p>"), std::string::npos);
  EXPECT_NE(html.find("src=\"data:image/png;base64," + base64_encode(bytes) + "\""), std::string::npos);
  EXPECT_NE(html.find("<figcaption>A panda [eating]</figcaption>"), std::string::npos);
  EXPECT_NE(html.find("class=\"placeholder\""), std::string::npos);
  EXPECT_NE(html.find("<figcaption>竹林里的熊猫</figcaption>"), std::string::npos);
  EXPECT_EQ(html.find("<friends>"), std::string::npos);
  EXPECT_EQ(html.find(img), std::string::npos);  // embedded, not linked
  // A missing image is an error, not a broken page.
  const Article bad = fixed_article(dir.file("missing.png"));
  EXPECT_THROW(to_html(bad, ""), Error);
}

TEST(ComposeArticle, MimeAndBase64) {
  EXPECT_EQ(mime_type_from_magic(std::string("\x89PNG\r\n\x1a\n....", 12)), "image/png");
  EXPECT_EQ(mime_type_from_magic("\xFF\xD8\xFF\xE0...."), "image/jpeg");
  EXPECT_EQ(mime_type_from_magic("GIF89a..."), "image/gif");
  EXPECT_EQ(mime_type_from_magic(std::string("RIFF\x10\x00\x00\x00WEBPVP8 ", 16)), "image/webp");
  EXPECT_EQ(mime_type_from_magic("BM......"), "image/bmp");
  EXPECT_EQ(mime_type_from_magic("hello"), "application/octet-stream");
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xff\x00\xfe", 3)), "/wD+");
  EXPECT_EQ(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
}

}  // namespace
}  // namespace xc2::compose
