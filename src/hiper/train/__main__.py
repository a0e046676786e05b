"""``python -m hiper.train CONFIG [OVERRIDES] [--resume]``: ``hiper train``, as the module that
``torchrun --nproc_per_node N -m hiper.train ...`` launches once per rank."""

import sys

from hiper.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]], prog_name="python -m hiper.train")
