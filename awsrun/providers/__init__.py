"""Where a cluster's machines come from: `aws` (EC2), `ssh` (hosts the user already has), `local` (this machine)."""
