"""Preprocessing around nnU-Net's own: intake of raw data, dataset checks, the embedding cache."""
