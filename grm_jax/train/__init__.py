"""Training: losses, optimisation and the RFT / GRPO training loops."""
