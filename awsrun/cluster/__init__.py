"""Cluster use cases: up (candidates, failover, several nodes), stop/start/down, status, and what they need: keys, access, the EC2 side, autostop, ssh-config."""
