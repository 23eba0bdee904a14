"""Training one adapter: the loop (``trainer``), the peft method it attaches (``methods``), the run
directory and its JSONL event log (``runs``), and the progress bar (``progress``)."""
