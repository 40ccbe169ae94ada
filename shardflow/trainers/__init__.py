"""Models from the source tutorials, training, evaluation, prediction and reports."""
