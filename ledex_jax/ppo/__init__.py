"""PPO with LeDex's code and explanation rewards."""
