#!/usr/bin/env python3
"""Derives otelephant's shipped LLM price table (prices/litellm.json) from LiteLLM's model price
file, which LiteLLM publishes under the MIT license (notice in prices/LICENSE-litellm).

    python3 prices/derive.py model_prices_and_context_window.json > prices/litellm.json

Keeps the models priced per token (chat, completion, responses and embedding modes), named by
one model name under their provider (regional and reseller entries such as
`azure/eu/gpt-4o-mini` are left out), with the fields otelephant reads: the provider, the mode
and the five per-token prices. The output is LiteLLM's own format, so a newer LiteLLM file can
also be given whole as `llm.price_file` (README.md "LLM calls").
"""
import json
import sys

MODES = {"chat", "completion", "responses", "embedding"}
FIELDS = [
    "litellm_provider",
    "mode",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
]


def main(path):
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    kept = {}
    for key, entry in sorted(table.items()):
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        provider = entry.get("litellm_provider")
        if not isinstance(provider, str):
            continue
        name = key[len(provider) + 1 :] if key.startswith(provider + "/") else key
        if "/" in name:
            continue
        if not any(isinstance(entry.get(f), (int, float)) for f in FIELDS[2:]):
            continue
        kept[key] = {f: entry[f] for f in FIELDS if f in entry and entry[f] is not None}
    out = sys.stdout
    out.write("{\n")
    for i, (key, entry) in enumerate(kept.items()):
        sep = "," if i + 1 < len(kept) else ""
        out.write(f"{json.dumps(key)}: {json.dumps(entry, separators=(',', ':'))}{sep}\n")
    out.write("}\n")


if __name__ == "__main__":
    main(sys.argv[1])
