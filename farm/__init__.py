"""motion-farm: a render farm for motion-controlled character animation.

The public Python API (see `farm.api`): `farm.render`, `farm.submit`, `farm.status`, with
`farm.Shot`, `farm.ShotResult`, `farm.CampaignResult` and `farm.FarmError`.

Layers, bottom to top. A module imports only from its own package or from lower layers, so the
data flows one way and nothing imports in a circle (tests/test_layers.py reads every import and
enforces this table):

    0  errors, types, rig, _version       shared value types and errors; import nothing of farm
    1  storage, media, windows            storage imports nothing above errors
    2  pose                               extract, smooth, retarget, draw; never backends
    3  config, character, qa, backends    the stages' building blocks
    4  stitch, manifest, report           stitching windows; the shot's record and its HTML page
    5  shot                               one shot, stage by stage; never Ray (runtime)
    6  records, campaign, sweep           the campaign's record, campaign files, sweep grids
    7  runtime                            everything that knows about Ray
    8  api                                the Python API
    9  cli, bench                         the command line and the benchmarks, over the API

The API is loaded on first use, so `import farm.errors` (as every module does) stays cheap and
cannot import in a circle.
"""
from farm._version import __version__

_API = ("render", "submit", "status", "CampaignResult", "ShotResult", "Shot", "FarmError")


def __getattr__(name: str):
    if name in _API:
        from farm import api

        return getattr(api, name)
    raise AttributeError(f"module 'farm' has no attribute {name!r}")


__all__ = ["__version__", *_API]
