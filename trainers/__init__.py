"""samnet's nnU-Net trainers, one mode per file, and the variant every trainer (nnU-Net's
too) trains as (``variants``: a progress bar over the epochs, DDP under torchrun)."""
