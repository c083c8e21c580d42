"""The frozen encoder's embedding cache: built once per plan, read by the cached trainers."""
