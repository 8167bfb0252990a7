"""The UCI chess vocabulary and tokenizer.json that the chesslens fixture models share.

The 77-token order is the one public chess GPT-2 models use (`<pad> <s> </s>`, piece letters,
the 64 squares in a fixed non-alphabetical order, promotion letters); models with a larger
vocabulary append `<extra_0>`, `<extra_1>`, ... The tokenizer splits special tokens out first,
then whitespace-separated words, then digits merged with the preceding text, so "e2e4 e7e8q"
becomes e2 e4 e7 e8 q, and its post-processor prepends `<s>`.
"""

CHESS_TOKENS = (
    "<pad> <s> </s> P N R B Q K c2 c4 e7 e5 g2 g3 b8 c6 f1 g8 f6 b1 c3 f8 b4 d5 e8 e2 e3 e4 a2 a3 "
    "d6 d8 a1 e6 b2 b3 c7 d2 d3 f7 f5 a7 a5 g1 d4 g4 c5 e1 d7 d1 h8 c1 a4 h2 h3 a8 f4 g7 g5 b6 b7 "
    "c8 h7 h4 f3 h5 h1 f2 h6 g6 b5 a6 q r b n"
).split()

assert len(CHESS_TOKENS) == 77 and len(set(CHESS_TOKENS)) == 77


def vocabulary(size=77):
    """Token strings for ids 0..size-1 (size >= 77; extras are `<extra_i>`)."""
    if size < 77:
        raise ValueError(f"vocabulary size {size} < 77")
    return list(CHESS_TOKENS) + [f"<extra_{i}>" for i in range(size - 77)]


def tokenizer_spec(size=77):
    """A tokenizer.json dict (HF tokenizers WordLevel format) for the chess vocabulary."""
    tokens = vocabulary(size)
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, t in enumerate(tokens[:3])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Whitespace"},
                {
                    "type": "Split",
                    "pattern": {"Regex": "\\d"},
                    "behavior": "MergedWithPrevious",
                    "invert": False,
                },
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(tokens)}, "unk_token": "<pad>"},
    }
