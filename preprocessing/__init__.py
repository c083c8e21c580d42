"""Dataset intake: converters into nnU-Net's raw format, the dataset checker and the demo dataset."""
