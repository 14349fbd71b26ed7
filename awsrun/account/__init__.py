"""What an AWS account allows and costs: prices, GPU quotas, and doctor's checklist."""
