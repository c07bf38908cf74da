"""trainer: reward model, PPO, DPO and SFT from the feedback store, under accelerate.

Modules, lowest first:
    ops.py             log-prob shift/gather, reply masks, KL, GAE, whitening, PPO/BT/DPO losses
    batch.py           right-padded prompt+reply batches
    logprobs.py        reply log-probs under a causal LM (logits only for reply columns)
    trunk.py           the frozen bottom layers, run once and shared (top-N training)
    lora.py            LoRA adapters (reference = adapters off), merging, top-N freezing
    datasets.py        token-level sets from a feedback snapshot, split by conversation
    reward_model.py    scalar-head model (reward and value) and its saved artifact
    reward_training.py Bradley-Terry training and held-out pair accuracy
    sft.py, dpo.py     supervised fine-tuning, direct preference optimisation
    ppo.py             PPO with engine rollouts
    evaluation.py      a new version against its parent on held-out prompts
    algorithms.py      the registry of training algorithms (torch-free)
    settings.py        run settings with one default and a help string each; the phase plan
    memory.py          up-front memory estimate
    checkpoints.py     resumable run checkpoints
    run.py             the state a run's phases share: checkpoints, evaluation, saving
    phases/            one module per phase: sft, reward, and each algorithm's policy phase
    pipeline.py        a whole run: snapshot -> SFT -> reward -> policy phase -> new version
    runtime.py         accelerator, optimizer, one training step, NaN checks
    progress.py        console progress bars with ETA
    pretrain*.py       `chat-tui pretrain` (a small model from your own text), separate from RLHF
`chat-tui train` (chat_tui/commands/train.py) is the command line; `accelerate launch -m
chat_tui train` runs it data-parallel.
"""
