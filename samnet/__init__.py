"""samnet: self-configuring fine-tuning of Segment Anything inside nnU-Net v2."""

__version__ = "0.1.0"
