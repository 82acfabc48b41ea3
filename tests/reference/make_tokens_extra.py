"""More tokenizer edge cases, with ids from open_clip's own tokenizer (3.3.0 when generated).

Usage: python3 make_tokens_extra.py  (needs open_clip_torch); writes tokens_extra.json.
"""
import json

import open_clip

S = ["a small green triangle above a large yellow star", "Zero-shot CLASSIFICATION with prompts: 'a photo of a {}'",
     "multiple\n\nlines\nof text", "ÅÄÖ åäö — ümlaut ß", "numbers 1234567890 and symbols #@$%^&*", " ".join(["repeat word"] * 60),
     "fish &amp;amp; chips &lt;3", "“curly” ‘quotes’ and ﬁne ｆｕｌｌｗｉｄｔｈ", "I'LL be there, won't you? it'S",
     "tab\tsep\x1cinfo", "<end_of_text> typed", "x<start_of_text>y!!<end_of_text>", "Ünïcödé NFD: cafe\u0301", "İstanbul ǅ ﬃ",
     "emoji 👩‍👩‍👧 flags 🇯🇵", "math ∑∫√ ≤ ≥", "tokens:\u00a0nbsp\u2009thin", "URL https://example.com/a?b=c&d=e"]
ids = open_clip.get_tokenizer("ViT-B-32")(S)
with open("tokens_extra.json", "w") as f:
    json.dump({"open_clip_version": open_clip.__version__,
               "cases": [{"text": s, "open_clip": i.tolist()} for s, i in zip(S, ids)]}, f, ensure_ascii=False)
print("written")
