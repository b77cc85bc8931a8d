"""Everything that knows about Ray: starting the cluster connection and placing the work.

Stage logic (farm.shot, farm.pose, farm.backends) never imports Ray; this package runs it as
Ray tasks and moves only small records through the driver — frames go through the store.
"""
