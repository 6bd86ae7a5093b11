"""Reinforcement-learned routers TRIM-Agg and TRIM-Seq (NumPy; no torch)."""
