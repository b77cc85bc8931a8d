"""Provenance of a rendered video, in the order a shot meets it:

    rights       the rights gate: a shot whose rights lack a source or a consent is refused
    watermark    the invisible mark in every frame (a code of the shot id), written and read
    credentials  C2PA Content Credentials: the signed manifest in video.mp4
    verify       what a video says about itself: credentials and watermark (`farm verify`)
"""
