"""Media in and out: probe (what an input file holds), decode (frames out of a video), encode
(frames into an MP4)."""
