#!/usr/bin/env python3
"""Render tests/testdata/chat/*.jinja on tests/testdata/chat/conversations.json with
transformers' apply_chat_template and write tests/testdata/chat/goldens.json, which
tokenizer/chat_test.go (TestChatTemplateGoldens) compares lukv's Go rendering with.

No network: the tokenizer is a one-word WordLevel model built here; only its special
tokens and chat template matter for rendering.

    python3 scripts/make_chat_goldens.py   # from the repository root
"""
import json
import os
import sys

import transformers
from tokenizers import Tokenizer, models

try:
    from transformers import PreTrainedTokenizerFast as Fast
except ImportError:  # transformers 5 renamed it
    from transformers import TokenizersBackend as Fast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CHAT = os.path.join(ROOT, "tests", "testdata", "chat")

# The special tokens each template is rendered with (as in the models'
# tokenizer_config.json).
TEMPLATES = {
    "llama3": {"BOS": "<|begin_of_text|>", "EOS": "<|eot_id|>"},
    "llama31-style": {"BOS": "<|begin_of_text|>", "EOS": "<|eot_id|>"},
    "qwen2": {"BOS": "", "EOS": "<|im_end|>"},
    "mistral": {"BOS": "<s>", "EOS": "</s>"},
}


def tokenizer(bos, eos, template):
    vocab = {"<unk>": 0, eos: 1}
    if bos:
        vocab[bos] = 2
    tok = Fast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
               bos_token=bos or None, eos_token=eos, unk_token="<unk>")
    tok.chat_template = template
    return tok


def main():
    with open(os.path.join(CHAT, "conversations.json")) as f:
        convs = json.load(f)
    cases = []
    for name, special in TEMPLATES.items():
        with open(os.path.join(CHAT, name + ".jinja")) as f:
            src = f.read()
        tok = tokenizer(special["BOS"], special["EOS"], src)
        for conv_name, conv in convs.items():
            for gen in (False, True):
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
                except Exception as e:  # raise_exception in the template
                    case["error"] = str(e)
                cases.append(case)
    out = {"transformers_version": transformers.__version__, "templates": TEMPLATES, "cases": cases}
    path = os.path.join(CHAT, "goldens.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
