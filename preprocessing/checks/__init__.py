"""The dataset checker: every problem of a raw dataset at once, each with its fix."""
