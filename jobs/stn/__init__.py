"""Building blocks of jobs/train_stn.py: data, distortions, models, checkpoints, artifacts.

Self-contained on purpose: nothing here imports awsrun, so the job directory
can be copied to any machine with torch and run as is.
"""
