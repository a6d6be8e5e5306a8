#!/usr/bin/env python3
"""Expected chat-template renders for tests/data/chat (pip install jinja2; outside the C suite):
each case renders a template with jinja2 set up as transformers' apply_chat_template sets it
(trim_blocks, lstrip_blocks, tojson with ensure_ascii=False, raise_exception), and cases.json
stores the text (or the error) the C interpreter must give.

    python3 tools/make_chat_fixture.py tests/data/chat
"""
import json
import os
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "날씨 \"now\"",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CONVERSATIONS = {
    "single": [{"role": "user", "content": "안녕하세요! What is 2+2?"}],
    "system": [{"role": "system", "content": "You are A.X."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello!\n"}, {"role": "user", "content": "  spaces  "}],
    "two-systems": [{"role": "system", "content": "First."}, {"role": "system", "content": "Second."},
                    {"role": "user", "content": "q"}],
    "thinking": [{"role": "user", "content": "why?"},
                 {"role": "assistant", "content": "<think>\nbecause\n</think>\n\nanswer"},
                 {"role": "user", "content": "and?"}],
    "tools": [{"role": "user", "content": "weather in Seoul?"},
              {"role": "assistant", "content": None, "tool_calls": [
                  {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Seoul\"}"}},
                  {"type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
              {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "noon"},
              {"role": "assistant", "content": "Sunny at noon."}],
    "tool-last": [{"role": "user", "content": "x"},
                  {"role": "assistant", "content": "calling", "tool_calls": [
                      {"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "content": "out"}],
    "bad-system": [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}],
}


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "tests/data/chat"
    cases = []
    for tname in ("chatml", "deepseek-v3", "features"):
        with open(os.path.join(d, tname + ".jinja"), encoding="utf-8") as f:
            tmpl = ENV.from_string(f.read())
        for cname, msgs in CONVERSATIONS.items():
            if tname == "chatml" and cname in ("tools", "tool-last"):
                continue  # its template reads message['content'] as a string
            for agp in (True, False):
                for think in (None, False, True):
                    if think is not None and not agp:
                        continue
                    kw = {"messages": msgs, "add_generation_prompt": agp, "bos_token": "<｜begin▁of▁sentence｜>",
                          "eos_token": "<｜end▁of▁sentence｜>"}
                    if think is not None:
                        kw["enable_thinking"] = think
                    if tname == "features" and cname == "single":
                        kw["tools"] = [TOOL, {"type": "function", "function": {"name": "t2"}}]
                    case = {"template": tname + ".jinja", "name": cname, **{k: v for k, v in kw.items()}}
                    try:
                        case["expected"] = tmpl.render(**kw)
                    except jinja2.exceptions.TemplateError as e:
                        case["error"] = str(e)
                    cases.append(case)
    with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"{len(cases)} cases, {sum('error' in c for c in cases)} errors")


if __name__ == "__main__":
    main()
