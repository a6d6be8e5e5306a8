#!/usr/bin/env python3
"""Make a tokenizer fixture with Hugging Face `tokenizers` (pip install tokenizers; outside the C
test suite): train a BPE tokenizer in one of a few configurations on text from this repository,
write tokenizer.json (+ tokenizer_config.json with a chat template) and cases.jsonl, the
reference encodings (add_special_tokens=False) and decodings (skip_special_tokens=False) the C
tokenizer must reproduce exactly.

    python3 tools/make_tokenizer_fixture.py --config nfc-bytefallback --vocab 2000 -o tests/data/tokenizer-nfc
    python3 tools/make_tokenizer_fixture.py --config dsv3 --vocab 384 --template -o models/tiny-axk1 \
        --specials '<|pad|>,<|endoftext|>,<|im_end|>,<|im_start|>,<think>,</think>' --random-cases 20

Configurations:
  dsv3              DeepSeek-V3's pre-tokenizer (three Splits, ByteLevel without its regex), ByteLevel decoder
  nfc-bytefallback  NFC; a GPT-4-style Split with a case-insensitive group, Digits, Metaspace("first");
                    BPE with byte_fallback over a limited alphabet; Replace/ByteFallback/Fuse/Strip decoder;
                    added tokens with lstrip / rstrip / single_word / normalized
  behaviours        NFKC; Splits with every behaviour and invert; ByteLevel(add_prefix_space, use_regex);
                    ignore_merges
"""
import argparse
import glob
import json
import os
import random

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers, AddedToken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DSV3_SPLITS = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]
GPT4_STYLE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not "
          "enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}")

MULTILINGUAL = [
    "대한민국의 수도는 서울특별시입니다. 서울은 한강을 따라 펼쳐진 도시로, 약 천만 명이 살고 있습니다.",
    "인공지능 반도체는 대규모 언어 모델의 추론을 빠르게 처리하기 위해 설계되었습니다.",
    "SK텔레콤은 A.X K1이라는 5천억 개 매개변수 규모의 모델을 공개했습니다.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "東京は日本の首都です。ひらがなとカタカナ、そして漢字を使います。",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "Ελληνικά: η γλώσσα των φιλοσόφων. العربية تكتب من اليمين إلى اليسار. עברית גם.",
    "Emoji: 👩‍👩‍👧‍👦 👍🏽 🇰🇷 ❤️ and café, naïve, coöperate, Ångström, ﬁ ligature, ① ② ③, Ⅻ.",
    "Decomposed: e\u0301 a\u0308 \u1112\u1161\u11ab\u1100\u1173\u11af; composed: é ä 한글.",
    "I'm sure you'll see they've said it's OK; WE'RE LOUD, You'Ll Mix Case.",
    "The price is $1,234,567.89 (about 12345678 won) on 2026-12-01 at 09:30.",
    "    indented line\twith tabs\n\n\nand blank lines   \r\n  trailing   ",
]


def corpus_lines():
    lines = []
    for pat in ("README.md", "LICENSE", "docs/*.md", "runtime/*.c", "text/*.c", "tools/*.py"):
        for path in sorted(glob.glob(os.path.join(ROOT, pat))):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines += [l.rstrip("\n") for l in f if l.strip()]
    return lines + MULTILINGUAL * 20


def random_text(rng):
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff),
              (0x900, 0x97f), (0x1100, 0x11ff), (0x2000, 0x206f), (0x3000, 0x30ff), (0x4e00, 0x4fff),
              (0xac00, 0xacff), (0xfb00, 0xfb4f), (0xff00, 0xffef), (0x1f300, 0x1f6ff), (0x1f900, 0x1f9ff)]
    out = []
    for _ in range(rng.randint(1, 40)):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice([" ", "  ", "\n", "\t", "\r\n", "   \n "]))
        elif r < 0.25:
            out.append(str(rng.randint(0, 10**rng.randint(1, 9))))
        else:
            lo, hi = rng.choice(ranges)
            cp = rng.randint(lo, hi)
            if 0xd800 <= cp <= 0xdfff:
                cp = 0x41
            out.append(chr(cp))
    return "".join(out)


def edge_cases(specials):
    s = ["", " ", "  ", "\n", " \n ", "a", "hello world", "Hello  World  ", "don't", "DON'T", "1", "12", "123", "1234",
         "3.14159", "x\u200dy", "\u00a0nbsp\u3000ideographic", "\u180e mongolian", "tab\tsep", "ends with space "]
    for sp in specials:
        s += [sp, "a" + sp + "b", " " + sp + " ", sp + sp, "text " + sp + "\nmore", "word" + sp, sp + "word"]
    return s


DEFAULT_SPECIALS = "<|endoftext|>,<|pad|>,<|im_start|>,<|im_end|>,<think>,</think>"


def build(config, vocab, seed, specials):
    rng = random.Random(seed)
    if config == "dsv3":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in DSV3_SPLITS]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif config == "nfc-bytefallback":
        tok = Tokenizer(models.BPE(byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.NFC()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4_STYLE), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False, limit_alphabet=120)
    elif config == "behaviours":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[.!?]+"), behavior="merged_with_previous"),
            pre_tokenizers.Split(Regex(r"[(\[{]"), behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="contiguous"),
            pre_tokenizers.Split(Regex(r"[,;]"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"[^\n]+"), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        raise SystemExit(f"unknown --config {config}")
    lines = corpus_lines()
    tok.train_from_iterator(lines, trainer)
    if config == "nfc-bytefallback":
        # byte_fallback needs <0x00>..<0xFF> in the vocabulary: append them
        d = json.loads(tok.to_str())
        v = d["model"]["vocab"]
        for b in range(256):
            name = f"<0x{b:02X}>"
            if name not in v:
                v[name] = len(v)
        tok = Tokenizer.from_str(json.dumps(d))
        # added tokens with every flag (ids after the vocabulary)
        tok.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, special=False, normalized=False),
                        AddedToken("ALERT", single_word=True, special=False, normalized=True),
                        AddedToken("caf\u00e9!", special=False, normalized=True)])
        specials += ["<tool>", "ALERT", "caf\u00e9!"]
    return tok, lines, specials, rng


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, choices=["dsv3", "nfc-bytefallback", "behaviours"])
    ap.add_argument("--vocab", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--specials", default=DEFAULT_SPECIALS, help="special tokens, comma-separated, ids from 0")
    ap.add_argument("--random-cases", type=int, default=200)
    ap.add_argument("--no-cases", action="store_true", help="write the tokenizer only")
    ap.add_argument("--template", action="store_true", help="also write tokenizer_config.json (ChatML template)")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    tok, lines, specials, rng = build(a.config, a.vocab, a.seed, a.specials.split(","))
    os.makedirs(a.out, exist_ok=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    if a.template:
        with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "add_bos_token": False, "pad_token": "<|pad|>",
                       "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHATML}, f, ensure_ascii=False, indent=2)
    if a.no_cases:
        return
    texts = MULTILINGUAL + rng.sample(lines, min(60, len(lines))) + edge_cases(specials)
    texts += [random_text(rng) for _ in range(a.random_cases)]
    with open(os.path.join(a.out, "cases.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            f.write(json.dumps({"text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)},
                               ensure_ascii=False) + "\n")
    print(f"{a.out}: {tok.get_vocab_size()} tokens, {len(texts)} cases")


if __name__ == "__main__":
    main()
