"""The frozen base model: resolving a name to local weights (``resolve``), the device and
quantization plan (``device``), loading the model and tokenizer (``loading``), and keeping the
libraries' load-time chatter quiet (``quiet``)."""
