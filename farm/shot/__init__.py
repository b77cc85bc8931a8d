"""One shot, stage by stage. The modules read in the order a shot is made:

    types    what a shot is (Shot, Reporter), its file names, timing helpers
    tools    what a stage works with: the store, the staging folder, the backend, the pose options
    inputs   1. fetch, probe and hash the inputs; the content key
    outcome  the shot's result and record: commit, failure, reuse, what the farm removes
    planned  ShotPlan: a planned shot and where its working files are
    plan     2-6. plan_shot: character, pose, preflight, retarget, window plan
    window   7. render one window and write its checkpoint
    segment  8-9. stitch and encode one segment (QA measures its frames on the way)
    finish   9-11. join the segments, write the pose artifacts, QA, report and manifest
    render   all of them in this process, in order (`render_shot`)

`farm.runtime` runs the same stages as Ray tasks. Nothing here imports Ray or the runtime.
"""
