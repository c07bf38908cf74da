"""The closed-loop benchmark: a simulated user's feedback in, a better model version out.

`python -m bench.loop run` asks the training prompts of a fixed prompt set through the
chat's own store API (k alternatives per prompt, ranked and thumbed by a programmatic
preference), runs `chat-tui train` as a subprocess for PPO and for DPO, and measures
each new version against its parent on held-out prompts: the preference rate with a
Wilson interval, the KL to the parent, a perplexity guard on a fixed text, and the wall
time and peak memory of each phase. See bench/loop/README.md.

Modules: prompt_set (the prompts and their split), preference (the simulated user's
taste), simulated_user (talking to the store like the chat does), measures (rates,
intervals, KL, perplexity), phases (timing and peak memory), runner (the whole loop),
report (JSON, markdown, plot). The benchmark never edits the trainer or the store.
"""
