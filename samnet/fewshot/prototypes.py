"""Class prototypes: masked average pooling of frozen image embeddings over labelled regions.

A prototype of class k is the mean image embedding (a D-vector) over the pixels labelled
k in some support slices, with each class's mask reduced to the embedding grid as the
fraction of each cell it covers; background (label 0) gets one too, and pixels outside the
image (nnU-Net's -1, also the sliding-window padding) count for no class. Slices are
summarised once as per-class sums and areas, so the prototypes of any subset of them (all
support slices for inference, the others for a training query) are two matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_fractions(
    labels: torch.Tensor, num_classes: int, grid: tuple[int, int]
) -> torch.Tensor:
    """Share of each embedding cell that each class covers.

    Arguments:
      labels: ``B x 1 x H x W`` integer labels; values outside ``0..num_classes-1``
        (nnU-Net's -1) belong to no class.
      num_classes: K, background included.
      grid: ``(h, w)`` of the embedding grid the ``H x W`` window maps onto.

    Returns:
      ``B x K x h x w`` fractions in [0, 1].
    """
    labels = labels[:, 0].long()
    inside = (labels >= 0) & (labels < num_classes)
    one_hot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes)
    one_hot = (one_hot * inside.unsqueeze(-1)).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, grid)


def pooled_sums(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window and class, the embedding summed over the class's area, and that area.

    Arguments:
      embeddings: ``B x D x h x w`` image embeddings of B windows.
      labels: ``B x 1 x H x W`` their labels (see ``class_fractions``).
      num_classes: K.

    Returns:
      sums ``B x K x D`` and areas ``B x K`` (in embedding cells).
    """
    fractions = class_fractions(labels, num_classes, tuple(embeddings.shape[-2:]))
    sums = torch.einsum("bkhw,bdhw->bkd", fractions, embeddings.float())
    return sums, fractions.sum(dim=(2, 3))


def sums_per_slice(
    sums: torch.Tensor, areas: torch.Tensor, window_slices: torch.Tensor, slices: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window sums ``N x K x D`` and areas ``N x K`` added up per support slice
    (``window_slices``: ``N`` slice numbers in ``0..slices-1``) -> ``S x K x D``, ``S x K``."""
    slice_sums = sums.new_zeros(slices, *sums.shape[1:])
    slice_areas = areas.new_zeros(slices, areas.shape[1])
    slice_sums.index_add_(0, window_slices, sums)
    slice_areas.index_add_(0, window_slices, areas)
    return slice_sums, slice_areas


def prototypes_from(
    slice_sums: torch.Tensor, slice_areas: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes of weighted sets of support slices.

    Arguments:
      slice_sums: ``S x K x D``; slice_areas: ``S x K`` (``sums_per_slice``).
      weights: ``Q x S``, 1 where slice s is pooled for row q, else 0.

    Returns:
      prototypes ``Q x K x D`` (0 where a class has no area) and the pooled areas ``Q x K``.
    """
    slices, classes, dim = slice_sums.shape
    weights = weights.to(slice_sums.dtype)
    pooled = (weights @ slice_sums.reshape(slices, classes * dim)).view(
        -1, classes, dim
    )
    areas = weights @ slice_areas
    return pooled / areas.clamp_min(1e-6).unsqueeze(-1), areas


def support_prototypes(
    slice_sums: torch.Tensor, slice_areas: torch.Tensor
) -> torch.Tensor:
    """``K x D`` prototypes pooled over every support slice: what inference uses."""
    every = torch.ones(1, len(slice_sums), dtype=slice_sums.dtype)
    return prototypes_from(slice_sums, slice_areas, every)[0][0]


def episode_prototypes(
    slice_sums: torch.Tensor,
    slice_areas: torch.Tensor,
    query_slices: torch.Tensor,
    keep: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Prototypes for training queries that never contain the query's own labels.

    Query q (a window of support slice ``query_slices[q]``) is prompted with prototypes
    pooled over a random subset of the OTHER support slices (each kept with probability
    ``keep``; 1 = all others, the leave-one-out used for validation). Per class, the first
    of these that has any area is used:

    1. the random subset of the other slices;
    2. all other slices;
    3. the query's own slice: only when no other support slice shows the class (K = 1,
       or a class drawn on a single slice); the query then learns from its own region.

    Arguments:
      slice_sums, slice_areas: ``S x K x D``, ``S x K`` (``sums_per_slice``).
      query_slices: ``Q`` support-slice numbers of the queries.
      keep: probability of keeping each other slice in the subset.
      generator: seeds the subsets.

    Returns:
      ``Q x K x D`` prototypes.
    """
    slices = len(slice_sums)
    own = F.one_hot(query_slices, slices).to(slice_sums.dtype)
    others = 1 - own
    draw = torch.rand(others.shape, generator=generator) < keep
    subset = others * draw.to(others.dtype)
    result = slice_sums.new_zeros(len(query_slices), *slice_sums.shape[1:])
    found = torch.zeros(result.shape[:2], dtype=torch.bool)
    for weights in (subset, others, own):
        prototypes, areas = prototypes_from(slice_sums, slice_areas, weights)
        take = ~found & (areas > 0)
        result = torch.where(take.unsqueeze(-1), prototypes, result)
        found |= take
    return result
