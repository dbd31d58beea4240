"""The reformulation model (issue 15): a small T5 that rewrites a person's request into a canonical one.

``data`` builds (query, rewrite) pairs, ``model`` builds the tiny T5 and its tokenizer and pre-trains it,
``train`` fine-tunes it, ``evaluate`` scores base and fine-tuned side by side. Part B adds runtimes/bench/serve.
"""
