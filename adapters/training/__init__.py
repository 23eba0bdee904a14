"""Training one adapter: the loop (``trainer``), the peft method it attaches (``methods``), its
optimizer and schedule (``optimizers``), the processes of a distributed launch (``distributed``),
the run directory and its JSONL event log (``runs``), and the progress bar (``progress``)."""
