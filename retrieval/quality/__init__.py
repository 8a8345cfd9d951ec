"""Measuring retrieval quality offline: captioned-data formats, recall@k, generated captioned scenes."""
