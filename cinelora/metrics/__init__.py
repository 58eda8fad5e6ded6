"""Evaluation metrics: LPIPS with any heads (`lpips_distance`), R-LPIPS head training and its 2AFC
robustness (`rlpips`, `two_afc`), FVD on I3D features (`fvd`, `i3d`), CLIP-SIM (`clip_sim`) and the
temporal metrics (`temporal`)."""
