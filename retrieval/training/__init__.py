"""Contrastive training of open_clip models on captioned data (what `clipsearch train` runs)."""
