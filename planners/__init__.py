"""SAM planners (fingerprint extras + SAMPlanner); arrive with the planner issue."""
