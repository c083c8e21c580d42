"""A progress bar over a trainer's epochs, with its loss and pseudo Dice."""

from __future__ import annotations

from tqdm import tqdm


class EpochProgressMixin:
    """Put in front of an nnU-Net trainer class (``training_variant``): a tqdm bar over
    the epochs, advanced as each one ends, with the last train loss and pseudo Dice.

    It starts at the epoch training resumes from, and shows on rank 0 only.
    """

    def on_train_start(self) -> None:
        super().on_train_start()
        self.epoch_bar = tqdm(
            total=self.num_epochs,
            initial=self.current_epoch,
            desc=f"{self.configuration_name} {type(self).__name__} fold {self.fold}",
            unit="epoch",
            disable=self.local_rank != 0,
        )

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self.epoch_bar.set_postfix(
            train_loss=f"{self.logger.get_value('train_losses', step=-1):.3f}",
            pseudo_dice=f"{self.logger.get_value('mean_fg_dice', step=-1):.3f}",
        )
        self.epoch_bar.update(1)

    def on_train_end(self) -> None:
        super().on_train_end()
        self.epoch_bar.close()
