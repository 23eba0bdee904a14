"""Judging an adapter: the evaluation pass over a split (``loop``), the metrics it reports
(``metrics``), and re-scoring a stored adapter on new data (``score``)."""
