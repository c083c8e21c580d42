"""The folder samnet adds to ``nnUNet_extTrainer`` so nnU-Net's ``-tr`` finds its trainers.

nnU-Net imports every module of such a folder as a top-level name; this one holds only
``samnet_trainers``, which re-exports samnet's trainer classes.
"""
