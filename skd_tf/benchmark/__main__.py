"""``python -m skd_tf.benchmark`` (or ``python -m benchmark`` in a copied folder): the benchmark's CLI."""

import sys

from .cli import main

sys.exit(main())
