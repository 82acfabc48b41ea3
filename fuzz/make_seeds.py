#!/usr/bin/env python3
"""Writes a small seed corpus per fuzz target into fuzz/corpus/<target>/ from the repository's
reference fixtures, so libFuzzer starts from valid inputs (a tar shard, images, a tokenizer, a
safetensors file, configs) instead of random bytes. Standard library only."""
import gzip, io, json, os, struct, tarfile

ROOT = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(ROOT, "..", "tests", "reference")


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ref(*parts):
    with open(os.path.join(REF, *parts), "rb") as f:
        return f.read()


images = {n: ref("images", n) for n in ["gray.png", "palette.png", "rgba.png", "upright.jpg",
                                        "cmyk.jpg", "lossless.webp"]}
for n, b in images.items():
    put("image_decode", n, b)

members = [("000.png", images["gray.png"]), ("000.txt", b"a grey square"), ("000.cls", b"3"),
           ("001.jpg", images["upright.jpg"]), ("001.json", b'{"caption": "an upright photo"}'),
           ("002.webp", images["lossless.webp"]), ("002.txt.gz", gzip.compress(b"lossless"))]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
put("wds_shard", "shard.tar", buf.getvalue())
put("wds_shard", "shard.tar.gz", gzip.compress(buf.getvalue()))

for i, t in enumerate(["a photo of a cat.", "A  PHOTO of 2 dogs!!", "naïve café — 東京 🙂",
                       "<|startoftext|>x<|endoftext|>", "don't 'quote' me", ""]):
    put("clip_tokenizer", f"t{i}", t.encode())

word_level = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
              "normalizer": {"type": "Lowercase"},
              "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
              "model": {"type": "WordLevel", "unk_token": "[UNK]",
                        "vocab": {"[UNK]": 0, "a": 1, "photo": 2, "of": 3, "cat": 4}}}
put("hf_tokenizer", "word_level.json", json.dumps(word_level).encode())

header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
          "__metadata__": {"format": "pt"}}
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
put("checkpoint_config", "tiny.safetensors", struct.pack("<Q", len(h)) + h +
    struct.pack("<4f", 1, 2, 3, 4))
put("checkpoint_config", "config.json", ref("clip_hf", "config.json"))
put("checkpoint_config", "preprocessor.json",
    json.dumps({"size": {"shortest_edge": 32}, "crop_size": 32, "do_resize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}).encode())

for i, s in enumerate(["shapes:train:10", "shapes:unseen", "x-{0000..0009}.tar",
                       "a{1..3}b{07..10}.tar", "shapes:val:1e14", "{a,b}{0..2}"]):
    put("source_spec", f"s{i}", s.encode())
