"""Files between the project and an instance: which files travel (ignore rules, scan), rsync push and pull, and the programs that run on the target for it."""
