"""The image branch: full-resolution features of the input added to SAM's mask features.

A fresh branch changes nothing, training moves it, trained-only checkpoints and the
fold-mean predictor carry it, and ``--image-branch yes`` reaches the plan. Its cache
(the windows beside the embeddings) is ``test_embedding_cache``'s; the planner's rules
for it are ``test_planner_rules``'.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import decision, fingerprint, plan, tiny_sam

from samnet.cli.options import overrides_from
from samnet.cli.plan import parse_arguments
from samnet.core.errors import SamnetError
from samnet.models.image_branch import ImageBranch
from samnet.models.network import EncodedImages, SamSegmentationNetwork
from samnet.models.peft import PeftConfig, apply_peft, trainable_parameters
from samnet.models.shared_encoder import fold_mean_network
from samnet.models.trained_checkpoint import load_trained, save_trained

CLASSES = 3
# Not the head's 4x grid (32 x 32 for tiny_sam's 8 x 8 embeddings): the branch's logits
# follow the input.
IMAGE = (2, 1, 40, 40)
# The decoder trained on a cached encoder, as the CPU plan with --image-branch yes.
DECODER_AND_BRANCH = PeftConfig(
    method="full", parts=("decoder",), trainable_extra=("class_head", "image_branch")
)
BASE = {"backbone": "tiny_sam", "sha256": ""}


def network(image_branch: bool = True, seed: int = 0) -> SamSegmentationNetwork:
    """A toy SAM for 1 channel and 3 classes; the same ``seed``, the same weights."""
    torch.manual_seed(seed)
    return SamSegmentationNetwork(
        tiny_sam(), 1, CLASSES, 64, "unit_range", image_branch=image_branch
    )


def without_branch(branched: SamSegmentationNetwork) -> SamSegmentationNetwork:
    """``branched``'s weights, without its image branch."""
    plain = copy.deepcopy(branched)
    plain.image_branch = None
    return plain


def images(seed: int = 1) -> torch.Tensor:
    return torch.randn(*IMAGE, generator=torch.Generator().manual_seed(seed))


def trained(seed: int) -> SamSegmentationNetwork:
    """A network as the plan adapts it, its trained parameters moved as training would."""
    adapted = apply_peft(network(), DECODER_AND_BRANCH)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in trainable_parameters(adapted):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return adapted.eval()


def test_a_fresh_branch_gives_the_logits_of_no_branch() -> None:
    branched = network().eval()
    plain = without_branch(branched)
    x = images()
    with torch.no_grad():
        embeddings = branched.encode(x)
        logits = branched.decode(embeddings, IMAGE[2:], images=x)
        # The head's logits at 4x the grid, resized: the path without a branch.
        expected = plain.decode(embeddings, IMAGE[2:])
        assert torch.equal(branched(x), logits)
        # As nnU-Net's training step moves a batch.
        encoded = EncodedImages(embeddings, IMAGE[2:], images=x).to(torch.device("cpu"))
        assert torch.equal(branched(encoded), logits)
    assert logits.shape == (IMAGE[0], CLASSES, *IMAGE[2:])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_the_branch_reads_every_input_channel_at_full_resolution() -> None:
    branch = ImageBranch(in_channels=4, out_channels=32)
    assert branch(torch.randn(2, 4, 56, 40)).shape == (2, 32, 56, 40)
    assert all(not p.any() for p in branch.out.parameters()), "starts at zero"


def test_one_step_trains_the_branch_and_it_then_changes_the_logits() -> None:
    branched = apply_peft(network(), DECODER_AND_BRANCH).train()
    branch = branched.image_branch
    assert all(p.requires_grad for p in branch.parameters())
    optimizer = torch.optim.AdamW(trainable_parameters(branched), lr=1e-2)
    x = images()
    target = torch.randint(0, CLASSES, (IMAGE[0], *IMAGE[2:]))

    F.cross_entropy(branched(x), target).backward()
    assert branch.out.weight.grad.abs().sum() > 0
    # Behind the zero output convolution, until it has moved.
    assert branch.features[0].weight.grad.abs().sum() == 0
    optimizer.step()
    optimizer.zero_grad()

    F.cross_entropy(branched(x), target).backward()
    assert branch.features[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        embeddings = branched.encode(x)
        with_branch = branched.decode(embeddings, IMAGE[2:], images=x)
        plain = without_branch(branched).decode(embeddings, IMAGE[2:])
    assert (with_branch - plain).abs().max() > 1e-3


def test_decoding_without_the_images_is_a_clear_error() -> None:
    branched = network()
    with torch.no_grad():
        embeddings = branched.encode(images())
    with pytest.raises(SamnetError, match="image branch") as error:
        branched(EncodedImages(embeddings, IMAGE[2:]))
    assert "--image-branch" in error.value.fix


def test_trained_only_checkpoints_restore_the_branch(tmp_path: Path) -> None:
    source = trained(seed=2)
    state = source.trained_state_dict()
    assert {"image_branch.out.weight", "image_branch.features.0.weight"} <= set(state)
    x = images()
    with torch.no_grad():
        expected = source(x)
        fresh = apply_peft(network(), DECODER_AND_BRANCH).eval()
        assert not torch.equal(fresh(x), expected)
        fresh.load_state_dict(state)
        assert torch.equal(fresh(x), expected)
        save_trained(source, tmp_path / "trained.pth", BASE)
        from_file = apply_peft(network(), DECODER_AND_BRANCH).eval()
        load_trained(from_file, tmp_path / "trained.pth", BASE)
        assert torch.equal(from_file(x), expected)
    no_branch = {k: v for k, v in state.items() if not k.startswith("image_branch.")}
    with pytest.raises(SamnetError, match="missing \\['image_branch"):
        apply_peft(network(), DECODER_AND_BRANCH).load_state_dict(no_branch)


def test_the_fold_mean_predictor_runs_each_folds_branch() -> None:
    folds = [trained(seed) for seed in (3, 4)]
    states = [fold.trained_state_dict() for fold in folds]
    mean = fold_mean_network(apply_peft(network(), DECODER_AND_BRANCH).eval(), states)
    x = images()
    with torch.no_grad():
        expected = torch.stack([fold(x) for fold in folds]).mean(dim=0)
        torch.testing.assert_close(mean(x), expected, rtol=1e-5, atol=1e-5)


def test_the_command_line_option_reaches_the_plan(capsys) -> None:
    arguments = parse_arguments(["Dataset004", "--image-branch", "yes"])
    result = plan(fingerprint(), **overrides_from(arguments))
    assert result.sam.image_branch is True
    assert decision(result, "image_branch")["because"] == (
        "set by the user (--image-branch)"
    )
    assert "image_branch" in result.sam.peft["trainable_extra"]
    with pytest.raises(SystemExit):
        parse_arguments(["Dataset004", "--image-branch", "maybe"])
    assert "give yes or no" in capsys.readouterr().err
