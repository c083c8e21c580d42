"""Prompts as an annotator gives them: simulated from reference masks, or read from a file."""
