"""What samnet knows about one SAM backbone: ``BackboneSpec``, every per-backbone fact.

The specs themselves are ``samnet.models.backbones.BACKBONES``. ``checkpoint_files`` reads
a spec's weight-file facts, ``backbones`` its builder and geometry, the planner
(``samnet.planners``) its normalisation and its cost.

Input normalisation (``BackboneSpec.normalization``), what each backbone was trained on:
- ``unit_range``: each image min-max scaled to [0, 1] (LiteMedSAM, MedSAM);
- ``sam_rgb``: 0..255 RGB standardised with SAM's pixel mean and std (SAM, MobileSAM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from segment_anything.modeling import Sam


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: builder, native input, normalisation, weight source and cost.

    Attributes:
      name: registry key, e.g. "lite_medsam".
      native_size: square input side the weights were trained at (px).
      embedding_stride: input pixels per image-embedding pixel.
      normalization: "unit_range" or "sam_rgb" (see the module docstring).
      checkpoint_filenames: the names users' weight files usually have.
      title: the backbone's published name, as reports show it.
      source: where users get the weights (shown when the file is missing).
      build: returns a randomly initialised ``Sam`` at ``native_size``.
      encoder_gflop: fp32 GFLOP of the image encoder's forward pass on one slice at
        ``native_size``, counted with torch's ``FlopCounterMode`` (2026-11-24). Window
        attention and MLPs grow with the number of tokens, so the planner's cost model
        scales it by ``(size / native_size) ** 2`` (LiteMedSAM: 19.95 at 128 px, 74.95
        at 256 px).
      last_stage_blocks: encoder blocks of the last stage (TinyViT) or of the last
        quarter of the blocks (ViT): what the ``prefix_cached`` encoder mode adapts.
      last_stage_share: share of the encoder's FLOPs in those blocks plus the neck, what
        ``prefix_cached`` still runs in every step. TinyViT: counted with
        ``FlopCounterMode`` (LiteMedSAM at 128 px: 5.53 + 1.37 of 19.95 GFLOP); a ViT's
        blocks all cost the same, so its last quarter.
      bundled_file: (package, path inside it) of a copy of the weights a Python package
        ships, if any.
      sha256: expected hash of the weight file, where known.
      unused_checkpoint_prefixes: keys the usual weight file holds that the model does not
        use; dropped before the otherwise strict load.
    """

    name: str
    title: str
    native_size: int
    embedding_stride: int
    normalization: str
    checkpoint_filenames: tuple[str, ...]
    source: str
    build: Callable[[], Sam] = field(repr=False)
    encoder_gflop: float
    last_stage_blocks: int
    last_stage_share: float
    bundled_file: tuple[str, str] | None = None
    sha256: str | None = None
    unused_checkpoint_prefixes: tuple[str, ...] = ()

    @property
    def bundled(self) -> bool:
        """True when a Python package ships the weights."""
        return self.bundled_file is not None
