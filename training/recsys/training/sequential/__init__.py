"""SASRec-style sequential retrieval: causal self-attention over a user's last L items.

``config.py`` (settings), ``model.py`` (torch model + exportable sequence encoder), ``data.py``
(training windows), ``job.py`` (Ray Train loop + ``train_sasrec``), ``artifacts.py`` (store export
in the two-tower layout, so serving loads it with the same code).
"""
