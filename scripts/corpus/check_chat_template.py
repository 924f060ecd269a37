#!/usr/bin/env python3
"""Checks scripts/chat_template.jinja against the chat samples of eval/formats (chat.go).

Renders the template the way transformers does (jinja2 ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, raise_exception) for the user message of each chat sample that
`make-train-data -eval -families chat` wrote, and asserts that BOS + the sample's prompt is
exactly the rendering with add_generation_prompt=True, and that the sample's answer is what
the template renders for the assistant turn (up to its closing newline). Also checks that
a bad role raises. Needs jinja2 (Debian python3-jinja2; transformers brings it).

  go run ./scripts/make-train-data -eval -families chat -n 3 -lengths 600 \
      -corpus CORPUS -words WORDS > /tmp/chat.jsonl
  python3 scripts/corpus/check_chat_template.py /tmp/chat.jsonl
"""
import json
import os
import sys

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

BOS = "<|begin_of_text|>"
SYSTEM, USER, ASSIST, END = "<|system|>\n", "<|user|>\n", "<|end|>\n<|assistant|>\n", "<|end|>"


def raise_exception(msg):
    raise TemplateError(msg)


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chat_template.jinja")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tmpl = env.from_string(open(path).read())
    n = systems = 0
    for line in open(sys.argv[1]):
        s = json.loads(line)
        prompt = s["context"] + s["question"]
        msgs, rest = [], prompt
        if rest.startswith(SYSTEM):
            end = rest.index(END + "\n" + USER)
            msgs.append({"role": "system", "content": rest[len(SYSTEM):end]})
            rest = rest[end + len(END) + 1:]
            systems += 1
        if not (rest.startswith(USER) and rest.endswith(ASSIST)):
            sys.exit(f"sample {n}: prompt does not start with [system turn] {USER!r} and end with {ASSIST!r}")
        msgs.append({"role": "user", "content": rest[len(USER):-len(ASSIST)]})
        got = tmpl.render(messages=msgs, add_generation_prompt=True, bos_token=BOS)
        if got != BOS + prompt:
            sys.exit(f"sample {n}: template renders\n{got[:200]!r}...{got[-200:]!r}\nsample has\n{(BOS + prompt)[-200:]!r}")
        reply = "The answer." + END
        full = tmpl.render(messages=msgs + [{"role": "assistant", "content": reply[:-len(END)]}],
                           add_generation_prompt=False, bos_token=BOS)
        if full != BOS + prompt + reply + "\n":
            sys.exit(f"sample {n}: assistant turn renders {full[-80:]!r}")
        n += 1
    try:
        tmpl.render(messages=[{"role": "tool", "content": "x"}], bos_token=BOS)
        sys.exit("a 'tool' role rendered; want an error")
    except TemplateError:
        pass
    if not n:
        sys.exit("no samples")
    try:
        tmpl.render(messages=[{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], bos_token=BOS)
        sys.exit("a system message after the first rendered; want an error")
    except TemplateError:
        pass
    print(f"ok: {n} chat samples ({systems} with a system turn) render exactly as the template does; "
          "a bad role and a late system message raise")


if __name__ == "__main__":
    main()
