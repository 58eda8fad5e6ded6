"""Evaluation metrics (LPIPS so far; R-LPIPS, FVD and CLIP-SIM join in later issues)."""
