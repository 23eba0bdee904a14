"""Making one model from others: merging stored adapters (``merge``) and exporting a base with a
LoRA merged in as a plain transformers model (``export_merged``)."""
