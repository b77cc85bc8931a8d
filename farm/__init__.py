"""motion-farm: a render farm for motion-controlled character animation.

The public Python API (see `farm.api`): `farm.render`, `farm.submit`, `farm.status`, with
`farm.Shot`, `farm.ShotResult`, `farm.CampaignResult` and `farm.FarmError`.

Layers, bottom to top. A module imports only from its own package or from lower layers, so the
data flows one way and nothing imports in a circle (tests/test_layers.py reads every import and
enforces this table):

    0  errors, _version, native           the one error type users see; the version; the C allocator
    1  types, rig                         shared value types, shot ids, the 15-joint rig
    2  storage, media, windows            storage imports nothing above errors
    3  pose, propose                      extract, smooth, retarget, draw; a drawing's skeleton from its mask
    4  config, character, qa, backends    the stages' building blocks
    5  stitch, manifest, report, provenance  stitching; the shot's record, its HTML page, its provenance
    6  shot                               one shot, stage by stage; never Ray (runtime)
    7  records, campaign, sweep, notify, library  the campaign's record, campaign files, sweep grids,
                                          alerts, the named motions of the motion library
    8  runtime                            everything that knows about Ray
    9  api                                the Python API
    10 cli, bench                         the command line and the benchmarks, over the API

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
