"""The harness layer: tasks, their artifacts, crystallised code and the learners that make it."""
