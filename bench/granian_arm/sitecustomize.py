"""Run ``python -m service serve ...`` under granian (bench/granian_arm/granian_serve.py).

Python imports this at start-up when this directory is on PYTHONPATH, as
``python -m bench.ab granian --env-a PYTHONPATH=$PWD/bench/granian_arm`` sets it for one
arm only. ``service.cli.serve`` names ``_serve`` when it builds its parser, after this.
"""

from granian_serve import serve

import service.cli.serve

service.cli.serve._serve = serve
