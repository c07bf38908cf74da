"""The closed-loop benchmark: a simulated user's feedback in, a better model version out.

`python -m bench.loop run --taste NAME` samples k alternatives per training prompt from
the base model (once, into a cache every taste shares), has a simulated user with that
taste rank, thumb and teach through the chat's own store API, runs `chat-tui train` as a
subprocess for PPO and for DPO, and measures each new version against its parent on
held-out prompts: the taste's rate with a Wilson interval and whether its rise counts as
a gain, reply-length drift, the KL to the parent, a perplexity guard on a fixed text, and
the wall time and peak memory of each phase. `matrix` does that for several tastes and
writes one table. See bench/loop/README.md.

Modules: prompt_set (the prompts and their split), candidates (the cached base-model
replies), tastes (the simulated tastes and their registry), simulated_user (feedback
through the store like the chat), measures (rates, intervals, the gain rule, KL,
perplexity), evaluation (a version answering the held-out prompts), outcome (the verdict
per version), phases (timing and peak memory), runner (one taste's loop), matrix (several
tastes), baseline (base rates), report (JSON, markdown, plot). The benchmark never edits
the trainer or the store.
"""
