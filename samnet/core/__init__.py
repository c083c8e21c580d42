"""What every stage shares: errors, nnU-Net's folders, on-disk names, datasets, plan schema."""
