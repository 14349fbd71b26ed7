"""The hermetic test harness: a real EC2 endpoint (moto server), real OpenSSH hosts on loopback
addresses, a ProxyCommand that maps instances to them, and a guard that keeps all traffic on loopback."""
