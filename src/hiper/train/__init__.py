"""Training: the PPO batch (rows = turns), the loss functions, the PPO update and SFT warm-up."""
