"""The typed functions the commands call: plan and preprocess, budgets, train, launch, report."""
