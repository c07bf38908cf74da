"""trainer: reward model, PPO, DPO and SFT from the feedback store, under accelerate."""
