"""SAM as nnU-Net networks: backbones, the prompt-free multi-class head, PEFT and checkpoints."""
