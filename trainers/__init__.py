"""nnU-Net trainers for SAM; arrive with the trainers issue."""
