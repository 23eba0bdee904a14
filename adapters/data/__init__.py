"""Training data: reading a source (``sources``, ``builtin``), cutting and checking the
train/dev/test splits (``splits``), and tokenizing and batching them (``batching``)."""
