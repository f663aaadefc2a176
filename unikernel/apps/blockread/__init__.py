"""The block-read appliance: the block suite's random reads, on our block interface."""
