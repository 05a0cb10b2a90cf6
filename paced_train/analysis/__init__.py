"""Analyses of the method on the toy world (``python -m paced_train.analysis.snr``)."""
