"""`make demo` finds its configs wherever the package's modules sit: every run it makes names a
shipped example config that validates (a move of the demo module once left it looking in the wrong
folder, which only `make demo` itself showed)."""

from adapters.cli.demo import DEMO_RUNS, example_configs
from adapters.config import load_config


def test_every_demo_config_is_shipped_and_valid():
    folder = example_configs()
    for name, _example in DEMO_RUNS:
        cfg = load_config(folder / name)
        assert cfg.name and (folder / name).is_file()
