# Put on PYTHONPATH by the test harness for every subprocess it starts (the awsrun CLI, the proxy).
import netguard

netguard.install()
