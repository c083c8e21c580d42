"""Raw data in: MSD and 2D converters, the demo dataset, image I/O as nnU-Net reads it."""
