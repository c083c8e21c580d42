"""SAM planning: a dataset's fingerprint and the machine -> a SAM plan, every decision with its reason.

``sam_planner.SAMPlanner`` is nnU-Net's experiment planner that writes the plan (nnU-Net's
configurations plus ``sam_2d``). It measures the dataset (``fingerprint``, ``modality``)
and the machine (``hardware``) and hands both to ``planner.Planner``, which applies the
rules: the weights (``weights``), what SAM sees of an image (``geometry``), the training
budget and its cost (``training``, ``cost_model``), the batch and gradient checkpointing
(``batch``) and what trains (``modes``), quoting
``evidence``. ``explain`` prints a plan's decisions as a table.
"""
