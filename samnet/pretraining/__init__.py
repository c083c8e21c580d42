"""Continued self-supervised pre-training of a SAM image encoder on the user's own slices.

- ``masking``: which patches of each image are hidden;
- ``masked_image_model``: the encoder reconstructing the hidden pixels (SimMIM-style);
- ``identity``: the pre-trained weights as a new base checkpoint with its own identity.
"""
