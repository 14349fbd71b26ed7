"""Instance setup: the driver/PyTorch stack, the bootstrap run over SSH, the instance-type catalog, the instance agent's client side."""
