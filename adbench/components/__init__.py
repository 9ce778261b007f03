"""Shared numerics every method builds on, written once: patch embedding (PatchCore, GLASS), greedy
coreset, exact kNN, conditional normalising flows, Gaussian fitting, losses (focal, SSIM),
post-processing (upsampling, Gaussian blur), opt-in bf16 precision, background prefetch, and anomaly
synthesis (``synthesis/``: Perlin masks, texture sources, CutPaste operations, blending)."""
