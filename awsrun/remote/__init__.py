"""How awsrun reaches "the instance": over SSH (paramiko, remote/ssh.py) or on this machine (remote/local.py)."""
